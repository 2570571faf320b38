"""Per-language knowledge: normaliser and script. `get_language("fa")` is the one entry point.

`get_language(code, **normalizer_config)` rebuilds exactly the normaliser recorded in an output's
`langgraft.json`, so every later stage applies the same normalisation as tokenizer training did.
"""

from __future__ import annotations

from langgraft.errors import UserError
from langgraft.lang.common import Language

__all__ = ["Language", "get_language", "LANGUAGES"]

LANGUAGES = ("fa", "en")


def get_language(code: str, **normalizer_config) -> Language:
    """The `Language` for `code` with its normaliser built from `normalizer_config` (defaults for missing keys)."""
    if code == "fa":
        from langgraft.lang import fa

        return fa.language(**normalizer_config)
    if code == "en":
        from langgraft.lang import en

        return en.language(**normalizer_config)
    raise UserError(f"--lang {code!r}: unknown language (known: {', '.join(LANGUAGES)})")
