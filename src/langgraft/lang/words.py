"""Word tokens for comparing texts whatever their source: the answer metrics (F1, ROUGE-L) and eval-text overlap.

Written by hand because the usual tokenizers are ASCII-only (rouge_score drops every Persian character). Arabic
and Persian letter variants and digits are folded, diacritics, tatweel and punctuation dropped, case lowered, and
ZWNJ-joined words kept whole, identically for every text so two models' outputs compare fairly.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from functools import lru_cache

_FOLD = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ة": "ه", "ۀ": "ه", "أ": "ا", "إ": "ا", "آ": "ا",
                       **{chr(0x06F0 + d): str(d) for d in range(10)}, **{chr(0x0660 + d): str(d) for d in range(10)}})
_PUNCT = set(string.punctuation) | set("،؛؟«»…“”‘’–—")
_WORD = re.compile(r"\w+(?:\u200c\w+)*")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_ZWNJ = "\u200c"


def _entry(cp: int) -> int | str | None:
    """What `words` makes of one code point: folded, deleted (Mn, tatweel), a space (punctuation and whatever else
    is not part of a word) or itself."""
    if cp in _FOLD:
        return _FOLD[cp]
    ch = chr(cp)
    if unicodedata.category(ch) == "Mn" or cp == 0x0640:
        return None
    return " " if ch in _PUNCT or not (ch.isalnum() or cp == 0x200C) else cp


@lru_cache(maxsize=1)
def _bmp() -> list:
    """The Basic Multilingual Plane as a list indexed by code point: str.translate reads a list ~1.7x faster than a
    dict, and the data prepare leak guard tokenizes every training record."""
    return [_entry(cp) for cp in range(0x10000)]


@lru_cache(maxsize=1)
def _astral() -> dict:
    """The code points past the BMP that `words` changes (built the first time a text holds one)."""
    return {cp: e for cp in range(0x10000, sys.maxunicode + 1) if (e := _entry(cp)) != cp}


def words(text: str) -> list[str]:
    """Persian-aware word tokens: NFKC, letter variants folded, diacritics and tatweel dropped, lower-cased."""
    # lower() first: it changes no folded, deleted or separating character, so one table pass does the rest
    text = unicodedata.normalize("NFKC", text).lower().translate(_bmp())
    if _ASTRAL.search(text):  # the list leaves code points past it as they are (IndexError)
        return _WORD.findall(text.translate(_astral()))
    if _ZWNJ in text and (_ZWNJ * 2 in text or " " + _ZWNJ in text or _ZWNJ + " " in text
                          or text[0] == _ZWNJ or text[-1] == _ZWNJ):
        return _WORD.findall(text)  # a ZWNJ that joins no two words is dropped, not kept inside a token
    # only word characters, ZWNJs between them and spaces are left: the words are what lies between the spaces
    return text.split()
