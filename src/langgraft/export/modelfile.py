"""The Ollama `Modelfile` that `export --gguf` writes beside `model.gguf`: FROM, TEMPLATE, stop parameters.

Ollama templates are Go templates, transformers' are Jinja, and no library converts one into the other. The
conversion here is by example, not by parsing the Jinja: the template is rendered on conversations whose contents
are marker strings, and the text around each marker is the wrapper of that role's turns. The Go template built
from those wrappers is rendered back (by the same wrappers) on a conversation with a system message and several
turns and must give exactly the Jinja rendering; a template that is not turn-by-turn (Mistral v0.3 moves the system
message into the last user turn) gets no TEMPLATE line, and Ollama then reads the chat template inside the GGUF.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.rundir import atomic_write_text

_SYS, _U1, _A1, _U2, _A2, _U3 = (f"\x02{name}\x03" for name in ("S", "U1", "A1", "U2", "A2", "U3"))


def write_modelfile(model_dir: str | Path, out_dir: str | Path, gguf_name: str) -> dict:
    """Write `out_dir/Modelfile` for the GGUF `gguf_name` made from `model_dir`; returns what it holds."""
    from langgraft import safeload

    tok = safeload.tokenizer(model_dir, "export")
    parts = chat_parts(tok)
    stops = _stops(tok, parts)
    lines = [f"FROM ./{gguf_name}"]
    if parts is not None:
        lines.append(f'TEMPLATE """{go_template(parts)}"""')
    elif tok.chat_template:
        lines.append("# The chat template is not turn by turn, so it has no Go form here: Ollama reads the one in "
                     "the GGUF file.")
    lines += [f"PARAMETER stop {_quote(stop)}" for stop in stops]
    atomic_write_text(Path(out_dir) / "Modelfile", "\n".join(lines) + "\n")
    return {"file": "Modelfile", "template": parts is not None, "stops": stops}


def chat_parts(tok) -> dict | None:
    """The text before and after each role's content, the head of a chat with and without a system message, and
    the generation prompt; None when the template has none or is not turn by turn."""
    if not tok.chat_template:
        return None
    try:
        a = _render(tok, [("user", _U1)])
        b = _render(tok, [("user", _U1), ("assistant", _A1)])
        c = _render(tok, [("user", _U1), ("assistant", _A1), ("user", _U2)])
        g = _render(tok, [("user", _U1)], generate=True)
        s = _render(tok, [("system", _SYS), ("user", _U1)])
    except Exception:  # a template that refuses these conversations (raise_exception in Jinja) has no such form
        return None
    if not (b.startswith(a) and c.startswith(b) and g.startswith(a)):
        return None
    user = c[len(b):].split(_U2)
    assistant = b[len(a):].split(_A1)
    if len(user) != 2 or len(assistant) != 2 or not a.endswith(user[0] + _U1 + user[1]) or "{{" in c + s:
        return None  # a literal "{{" would start a Go action
    parts = {"head": a[: len(a) - len(user[0] + _U1 + user[1])], "user": user, "assistant": assistant,
             "generate": g[len(a):], "system": None}
    if s.endswith(user[0] + _U1 + user[1]) and s.count(_SYS) == 1:
        parts["system"] = s[: len(s) - len(user[0] + _U1 + user[1])].split(_SYS)
    chat = [("system", _SYS), ("user", _U1), ("assistant", _A1), ("user", _U2), ("assistant", _A2), ("user", _U3)]
    for turns in (chat, chat[1:]):
        if _render_parts(parts, turns) != _render(tok, turns, generate=True):
            return None
    return parts


def go_template(parts: dict) -> str:
    """The Ollama (Go) template of `chat_parts`: .System, then each of .Messages by role, then the prompt."""
    system = parts["system"]
    # plain {{ }} actions only: "{{-" would also trim the newlines that end a turn
    head = "{{ if .System }}" + f"{system[0]}{{{{ .System }}}}{system[1]}" + "{{ else }}" + parts["head"] + \
        "{{ end }}" if system else parts["head"]
    (user_pre, user_post), (bot_pre, bot_post) = parts["user"], parts["assistant"]
    turns = ("{{ range .Messages }}{{ if eq .Role \"user\" }}" + f"{user_pre}{{{{ .Content }}}}{user_post}"
             + "{{ else if eq .Role \"assistant\" }}" + f"{bot_pre}{{{{ .Content }}}}{bot_post}" + "{{ end }}"
             + "{{ end }}")
    return head + turns + parts["generate"]


def _render_parts(parts: dict, turns: list[tuple[str, str]]) -> str:
    """What `go_template` renders for `turns` (system first, if any), written out in Python."""
    text = parts["head"]
    if turns[0][0] == "system":
        if parts["system"] is None:
            return ""
        text = turns[0][1].join(parts["system"])
        turns = turns[1:]
    for role, content in turns:
        text += content.join(parts["user"] if role == "user" else parts["assistant"])
    return text + parts["generate"]


def _render(tok, turns: list[tuple[str, str]], *, generate: bool = False) -> str:
    """The Jinja rendering without a leading BOS text: llama.cpp (and so Ollama) adds BOS when it tokenizes."""
    text = tok.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False,
                                   add_generation_prompt=generate)
    return text.removeprefix(tok.bos_token) if tok.bos_token else text


def _stops(tok, parts: dict | None) -> list[str]:
    """End of an assistant turn, the start of a user turn and EOS: where Ollama should stop generating."""
    stops = []
    if parts is not None:
        stops += [parts["assistant"][1].strip(), parts["user"][0].strip()]
    stops.append(tok.eos_token or "")
    return [s for i, s in enumerate(stops) if s and s not in stops[:i]]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
