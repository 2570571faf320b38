"""Word tokens for comparing texts whatever their source: the answer metrics (F1, ROUGE-L) and eval-text overlap.

Written by hand because the usual tokenizers are ASCII-only (rouge_score drops every Persian character). Arabic
and Persian letter variants and digits are folded, diacritics, tatweel and punctuation dropped, case lowered, and
ZWNJ-joined words kept whole, identically for every text so two models' outputs compare fairly.
"""

from __future__ import annotations

import re
import string
import unicodedata

_FOLD = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ة": "ه", "ۀ": "ه", "أ": "ا", "إ": "ا", "آ": "ا",
                       **{chr(0x06F0 + d): str(d) for d in range(10)}, **{chr(0x0660 + d): str(d) for d in range(10)}})
_PUNCT = set(string.punctuation) | set("،؛؟«»…“”‘’–—")
_WORD = re.compile(r"\w+(?:\u200c\w+)*")


def words(text: str) -> list[str]:
    """Persian-aware word tokens: NFKC, letter variants folded, diacritics and tatweel dropped, lower-cased."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD).lower()
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn" and ch != "\u0640")
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    return _WORD.findall(text)
