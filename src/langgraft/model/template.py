"""Rendering a tokenizer's chat template, bounded: the one place every verb (chat, generate, eval --chat, instruct
training) turns messages into prompt text.

A chat template is a program that comes with a model file (a GGUF's `tokenizer.chat_template`, a folder's
`tokenizer_config.json`). transformers runs it in Jinja's sandbox, which stops file and attribute access but not
a loop nested inside a loop, so a crafted template can keep `chat` busy forever. Here the template's size is
bounded before it runs, its rendering time while it runs (a timer signal: the main thread only, where every verb
renders), and the text it writes after.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from langgraft.errors import UserError

MAX_TEMPLATE_CHARS = 200_000  # the largest shipped templates (tool-calling ones) are about 10k characters
RENDER_SECONDS = 5.0  # a real template renders a conversation in milliseconds
MAX_GROWTH = 16  # the rendered text may be this many times the messages' characters, plus MIN_BUDGET
MIN_BUDGET = 100_000


class _Expired(BaseException):
    """Raised by the timer inside the template's code; a BaseException so no `except Exception` there eats it."""


def render_chat(tok, messages: list[dict], *, add_generation_prompt: bool) -> str:
    """`tok.apply_chat_template(messages, tokenize=False, ...)` within the bounds above; one UserError line when
    a bound is hit (the template's own errors stay jinja2/ValueError errors for the caller to report)."""
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str) and len(template) > MAX_TEMPLATE_CHARS:
        raise UserError(f"chat template: {len(template):,} characters, more than {MAX_TEMPLATE_CHARS:,}; not "
                        "rendered")
    with _time_limit(RENDER_SECONDS):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    budget = MIN_BUDGET + MAX_GROWTH * sum(len(str(m.get("content", ""))) for m in messages)
    if len(text) > budget:
        raise UserError(f"chat template: wrote {len(text):,} characters for {len(messages)} message(s), more than "
                        f"{budget:,}; not used")
    return text


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise UserError(f"chat template: still rendering after {seconds:g} s (a loop that does not end?); "
                        "not used") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
