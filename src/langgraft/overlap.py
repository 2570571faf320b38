"""Overlap between evaluation text and training text: one normalisation (`words`) and one index (`OverlapIndex`).

Texts are compared as word sequences (`lang.words`: NFKC, Arabic/Persian letter variants and digits folded,
diacritics, tatweel, punctuation and case dropped), so two copies of a text that differ only in those still match.
A key is a 64-bit blake2b hash of the words, the same in every process: an index saved as .npy serves the
`data prepare` workers. A text without words has no key and matches nothing.

Two questions use the one index:
- the `data prepare` leak guard (data/leaks.py) indexes evaluation texts and their lines, and drops a training
  record when one of its texts or lines is an indexed text (`OverlapIndex.matches`);
- the eval contamination check (eval/contamination.py) indexes training texts with their word 8-grams, and asks
  which share of an evaluation example's 8-grams occur in training text (`OverlapIndex.share`): 8 words in a row
  rarely repeat by chance, so unrelated text in the same language shares almost none. One integer per training
  word; datasketch's MinHash estimates similarity, not containment, which is not the question asked here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from langgraft.lang.words import words

N = 8  # words per n-gram of the contamination share


def content_hash(text: str) -> int:
    """A 64-bit hash of a string, the same in every process (Python's `hash` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _key(tokens: list[str]) -> int:
    # U+001F (unit separator) never occurs inside a word token, so distinct word lists never join alike
    return content_hash("\x1f".join(tokens))


def _grams(tokens: list[str]) -> list[int]:
    return [_key(tokens[i: i + N]) for i in range(len(tokens) - N + 1)]


class OverlapIndex:
    """Keys of whole texts and, with `grams=True`, of every word 8-gram of them."""

    def __init__(self, texts: Iterable[str] = (), *, grams: bool = False):
        self.texts: set[int] = set()
        self.grams: set[int] | None = set() if grams else None
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        tokens = words(text)
        if not tokens:
            return
        self.texts.add(_key(tokens))
        if self.grams is not None:
            self.grams.update(_grams(tokens))

    def matches(self, parts: Iterable[str]) -> bool:
        """Whether one of a record's texts, or one of their lines, is an indexed text."""
        for part in parts:
            # a text's words are its lines' words in order ("\n" is never inside a word): one pass serves both
            lines = [words(line) for line in part.split("\n")]
            whole = [w for tokens in lines for w in tokens]
            candidates = [whole, *lines] if len(lines) > 1 else [whole]
            if any(tokens and _key(tokens) in self.texts for tokens in candidates):
                return True
        return False

    def share(self, text: str) -> float:
        """Share of the text's word 8-grams found in indexed text (1.0: it is a whole indexed text; a text under
        8 words counts only as a whole text)."""
        tokens = words(text)
        if not tokens:
            return 0.0
        if _key(tokens) in self.texts:
            return 1.0
        if self.grams is None or len(tokens) < N:
            return 0.0
        grams = _grams(tokens)
        return sum(g in self.grams for g in grams) / len(grams)

    def save(self, path: Path) -> None:
        """The whole-text keys, sorted, as a .npy of uint64 (the 8-grams are not saved)."""
        import numpy as np

        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.array(sorted(self.texts), dtype=np.uint64))

    @classmethod
    def load(cls, path: str | Path) -> OverlapIndex:
        """An index of whole-text keys saved by `save`; a missing or empty path is an empty index."""
        index = cls()
        if path and Path(path).is_file():
            import numpy as np

            index.texts = {int(x) for x in np.load(path)}
        return index
