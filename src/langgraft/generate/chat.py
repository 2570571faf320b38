"""`langgraft chat --model PATH`: talk to a model in the terminal, or answer one `--prompt`, through its template.

A model with a chat template (an instruct stage's export or adapter, or any chat model) gets the conversation so
far as chat turns; a base model without one continues each line as plain text, without history. Replies stream
to the terminal as they are generated (decoding options: `langgraft.model.generation`; greedy with repetition penalty
1.1 unless `--temperature` > 0). `--json` prints one JSON object per turn (prompt, reply, token counts) instead.

Commands: `/system TEXT` sets the system message (an empty TEXT removes it), `/reset` starts a new
conversation, `/help` lists the commands, `/exit` or end of input (Ctrl-D) ends it; empty lines are ignored;
Ctrl-C stops a reply while it is written (the reply is not kept).
Text is printed as plain UTF-8: Persian shows right-to-left in terminals with bidirectional text support
(docs/TRAINING.md says which).
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from langgraft.errors import UserError
from langgraft.model.generation import Loading, Sampling
from langgraft.textfiles import check_unicode


@dataclass
class ChatOptions:
    """What `chat` may be told beyond its model and prompt: the source of its flags."""

    sampling: Sampling = field(default_factory=Sampling)
    json: bool = False  # one JSON object per turn instead of the streamed reply
    system: str = ""  # system message (also /system TEXT in the conversation)
    load: Loading = field(default_factory=Loading)


def reply(model, tok, history: list[dict], text: str, opts: ChatOptions, write=None) -> dict:
    """Generate the answer to `text` after `history`; `write` receives the reply's text as it is generated
    (None: not streamed). Returns the turn's record."""
    from langgraft.model.generation import generate_texts, stream
    from langgraft.model.load import chat_text

    templated = bool(getattr(tok, "chat_template", None))
    system = [{"role": "system", "content": opts.system}] if opts.system and templated else []
    prompt = chat_text(tok, [*system, *history, {"role": "user", "content": text}]) if templated else text
    if write is not None:
        out = stream(model, tok, prompt, opts.sampling, write)
    else:
        out = generate_texts(model, tok, [prompt], opts.sampling)[0]
        out["text"] = out["text"].strip()
    return {"prompt": text, "reply": out["text"], "chat_template": templated,
            **{k: out[k] for k in ("context_tokens", "new_tokens", "truncated_tokens")}}


def run_chat(path: str, opts: ChatOptions, *, prompt: str | None = None, stdin: TextIO | None = None,
             stdout: TextIO | None = None) -> list[dict]:
    """One `prompt`, or a conversation read line by line from `stdin`; prints and returns the turns."""
    from langgraft.model.load import load_model_or_adapter

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout  # looked up now: callers may have redirected them
    check_unicode(opts.system, "--system")
    model, tok = load_model_or_adapter(path, opts.load.device, opts.load.base)
    history: list[dict] = []
    turns: list[dict] = []
    interactive = prompt is None and stdin.isatty()
    if interactive:
        print(f"chatting with {path} (/system TEXT, /reset: new conversation, /exit or Ctrl-D: quit)", file=stdout)

    def write(piece: str) -> None:
        stdout.write(piece)
        stdout.flush()

    for text in _lines(prompt, stdin, stdout if interactive else None):
        if text == "/exit":
            break
        if _command(text, opts, history, stdout):
            continue
        if turns and not interactive and not opts.json:
            write("\n")  # piped: a blank line between replies, which may span several lines themselves
        try:
            turn = reply(model, tok, history, text, opts, None if opts.json else write)
        except KeyboardInterrupt:
            if not interactive:
                raise
            print("\n[reply stopped; not kept in the conversation]", file=stdout, flush=True)
            continue
        turns.append(turn)
        if turn["chat_template"]:
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": turn["reply"]}]
        print(json.dumps(turn, ensure_ascii=False) if opts.json else "", file=stdout, flush=True)
        if turn["truncated_tokens"]:
            print(f"langgraft: note: the conversation is longer than the context; its first "
                  f"{turn['truncated_tokens']} tokens were left out (/reset starts afresh)", file=sys.stderr)
    return turns


def _lines(prompt: str | None, stdin: TextIO, prompt_to: TextIO | None):
    """The user's lines, stripped; ends at end of input or Ctrl-C at the prompt."""
    if prompt is not None:
        yield check_unicode(prompt.strip(), "--prompt")
        return
    if prompt_to is not None and stdin is sys.stdin:
        try:  # imported for its effect: input() gets line editing and history in the terminal
            importlib.import_module("readline")
        except ImportError:  # not on every platform; input() works without it
            pass
    n = 0
    while True:
        n += 1
        try:
            if prompt_to is not None and stdin is sys.stdin:
                line = input("> ") + "\n"
            else:
                if prompt_to is not None:
                    print("> ", end="", file=prompt_to, flush=True)
                line = stdin.readline()
        except (KeyboardInterrupt, EOFError):
            line = ""
        except UnicodeDecodeError as exc:
            raise UserError(f"stdin: line {n}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})") from None
        if not line:  # end of input (Ctrl-D)
            if prompt_to is not None:
                print(file=prompt_to)
            return
        yield check_unicode(line.strip(), f"stdin: line {n}")


def _command(text: str, opts: ChatOptions, history: list[dict], stdout: TextIO) -> bool:
    """Handle an empty line, /reset or /system; True when `text` was one of them (nothing to answer)."""
    if not text:
        return True
    if text == "/reset":
        history.clear()
        return True
    if text == "/system" or text.startswith("/system "):
        opts.system = text[len("/system"):].strip()
        return True
    if text == "/help":
        print("commands: /system TEXT (empty: none), /reset, /exit (or Ctrl-D)", file=stdout, flush=True)
        return True
    return False
