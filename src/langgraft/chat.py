"""`langgraft chat --model PATH`: talk to a model in the terminal, or answer one `--prompt`, through its template.

A model with a chat template (an instruct stage's export, or any chat model) gets the conversation so far as
chat turns; a base model without one continues each line as plain text, without history. Decoding is greedy
unless `--temperature` > 0, so a reply is reproducible. `--json` prints one JSON object per turn (prompt, reply,
token counts) instead of the bare reply. In the terminal, `/reset` starts a new conversation and `/exit` (or
end of input) ends it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TextIO


@dataclass
class ChatOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    device: str | None = None
    json: bool = False


def reply(model, tok, history: list[dict], text: str, opts: ChatOptions) -> dict:
    """Generate the answer to `text` after `history`; returns the turn's record."""
    import torch

    from langgraft.eval.run import chat_prompt

    templated = bool(getattr(tok, "chat_template", None))
    prompt = chat_prompt(tok, text, history) if templated else text
    enc = tok(prompt, return_tensors="pt").to(model.device)
    sampling = {"do_sample": True, "temperature": opts.temperature} if opts.temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=opts.max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
    new = out[0, enc["input_ids"].shape[1]:]
    answer = tok.decode(new, skip_special_tokens=True).strip()
    return {"prompt": text, "reply": answer, "chat_template": templated,
            "context_tokens": int(enc["input_ids"].shape[1]), "new_tokens": int(new.shape[0])}


def run_chat(path: str, opts: ChatOptions, *, prompt: str | None = None, stdin: TextIO | None = None,
             stdout: TextIO | None = None) -> list[dict]:
    """One `prompt`, or a conversation read line by line from `stdin`; prints and returns the turns."""
    from langgraft.eval.run import load_model

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout  # looked up now: callers may have redirected them
    model, tok = load_model(path, opts.device)
    history: list[dict] = []
    turns: list[dict] = []
    lines = [prompt] if prompt is not None else stdin
    interactive = prompt is None and stdin.isatty()
    if interactive:
        print(f"chatting with {path} (/reset: new conversation, /exit: quit)", file=stdout)
    for line in lines:
        text = line.strip()
        if text == "/exit":
            break
        if text == "/reset" or not text:
            history = [] if text == "/reset" else history
            continue
        turn = reply(model, tok, history, text, opts)
        turns.append(turn)
        if turn["chat_template"]:
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": turn["reply"]}]
        print(json.dumps(turn, ensure_ascii=False) if opts.json else turn["reply"], file=stdout, flush=True)
    return turns
