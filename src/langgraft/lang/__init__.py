"""Per-language knowledge: normaliser and script. `get_language("fa")` is the one entry point.

`get_language(code, **normalizer_config)` rebuilds exactly the normaliser recorded in an output's
`langgraft.json`, so every later stage applies the same normalisation as tokenizer training did.
"""

from __future__ import annotations

from langgraft.errors import UserError
from langgraft.lang.common import Language

__all__ = ["Language", "get_language", "LANGUAGES", "DEFAULT_TARGET", "ANCHOR", "display_name"]

LANGUAGES = ("fa", "en")
DEFAULT_TARGET = "fa"  # the language grafted when a config names none
ANCHOR = "en"  # the base models' own language: the other side of pairs, replay text, what must stay unchanged
NAMES = {"fa": "Persian", "en": "English"}


def display_name(code: str) -> str:
    """The language's name in English prose (prompts, chart labels); an unknown code as it is."""
    return NAMES.get(code, code)


def get_language(code: str, **normalizer_config) -> Language:
    """The `Language` for `code` with its normaliser built from `normalizer_config` (defaults for missing keys)."""
    if code == "fa":
        from langgraft.lang import fa

        return fa.language(**normalizer_config)
    if code == "en":
        from langgraft.lang import en

        return en.language(**normalizer_config)
    raise UserError(f"--lang {code!r}: unknown language (known: {', '.join(LANGUAGES)})")
