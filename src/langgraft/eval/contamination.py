"""Contamination check: how much of an evaluation example's normalised text occurs in a training dataset?

Training text is normalised (the metric tokenizer's `words`) and indexed as hashed word 8-grams plus whole
normalised records. An example's overlap is the share of its word 8-grams that occur in training text (1.0 when
it is a whole training record; a text under 8 words counts only as a whole record). Eval is flagged at or above a
threshold (`--contamination-threshold`, default 0.2): a paragraph that shares a third of its 8-grams with training
text has been seen in part, and a model's score on it is no longer a held-out score; unrelated text in the same
language shares almost none (8 words in a row rarely repeat by chance). Hashing keeps memory at one integer per
training word; datasketch's MinHash estimates similarity, not containment, which is not the question asked here.

The data prepare leak guard (data/leaks.py) answers another question with another index: it removes training
records that *equal* an eval text (language-normalised, hashed whole) before training; this module measures,
after the fact, partial overlap of any eval set with any training data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from langgraft.errors import UserError
from langgraft.eval.metrics import words

N = 8
DEFAULT_THRESHOLD = 0.2  # flag an example when at least this share of its 8-grams occurs in training text


def iter_training_texts(path: str | Path) -> Iterator[str]:
    """Texts of a `data prepare` output or dataset folder (train-split parquet `text`), a .jsonl (`text`) or .txt."""
    path = Path(path)
    if path.is_dir():
        parquet = sorted(path.rglob("*.parquet"))
        # A `data prepare` output: only the train split is trained on; validation text may match legitimately.
        parquet = [f for f in parquet if f.parent.name == "train"] or parquet
        files = parquet + sorted(path.rglob("*.jsonl")) + sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"--contamination {path}: no .parquet, .jsonl or .txt files inside")
        for f in files:
            yield from iter_training_texts(f)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["text"])
        yield from (t for t in table.column("text").to_pylist() if t)
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield str(json.loads(line).get("text", ""))
                    except (json.JSONDecodeError, AttributeError):
                        raise UserError(f"--contamination {path}:{i}: not a JSON object") from None
    elif path.is_file():
        yield from path.read_text(encoding="utf-8").splitlines()
    else:
        raise UserError(f"--contamination {path}: not found")


class Index:
    def __init__(self, texts: Iterable[str]):
        self.grams: set[int] = set()
        self.records: set[int] = set()
        for text in texts:
            w = words(text)
            self.records.add(hash(tuple(w)))
            self.grams.update(hash(tuple(w[i: i + N])) for i in range(len(w) - N + 1))

    def overlap(self, text: str) -> float:
        """Share of the text's word 8-grams found in training text (1.0: the text is a whole training record)."""
        w = words(text)
        if not w:
            return 0.0
        if hash(tuple(w)) in self.records:
            return 1.0
        if len(w) < N:
            return 0.0
        grams = [hash(tuple(w[i: i + N])) for i in range(len(w) - N + 1)]
        return sum(g in self.grams for g in grams) / len(grams)


def build_index(paths: list[str]) -> Index | None:
    if not paths:
        return None
    return Index(t for p in paths for t in iter_training_texts(p))
