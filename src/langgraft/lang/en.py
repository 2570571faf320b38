"""English (en): the script is ASCII letters; normalisation only collapses whitespace.

English is the base language of every supported model, so its text is never rewritten beyond whitespace runs
(`newlines="keep"` keeps line breaks, `"space"` joins lines).
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Callable

from langgraft.lang.common import Language, check_options, make_script_ratio, whitespace_collapser

DEFAULTS = {"newlines": "keep"}
CHOICES = {"newlines": ("keep", "space")}
TARGET_CHARS = frozenset(string.ascii_letters)


def is_target_char(ch: str) -> bool:
    return ch in TARGET_CHARS


script_ratio = make_script_ratio("A-Za-z")


@lru_cache(maxsize=None)
def make_normalizer(newlines: str) -> Callable[[str], str]:
    return whitespace_collapser(newlines)


def language(**options) -> Language:
    config = check_options("en", options, DEFAULTS, CHOICES)
    return Language(code="en", normalize=make_normalizer(**config), normalizer_config=config,
                    is_target_char=is_target_char, is_target_letter=is_target_char, script_ratio=script_ratio)
