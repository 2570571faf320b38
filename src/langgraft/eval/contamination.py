"""Contamination check: how much of an evaluation example's text occurs in a training dataset?

The training texts (`iter_training_texts`) go into an `OverlapIndex` with their word 8-grams (overlap.py,
the one normalisation and index the `data prepare` leak guard uses too). An example's overlap is the share of its
word 8-grams that occur in training text (1.0 when it is a whole training record; a text under 8 words counts only
as a whole record). Eval is flagged at or above a threshold (`--contamination-threshold`, default 0.2): a
paragraph that shares a third of its 8-grams with training text has been seen in part, and a model's score on it
is no longer a held-out score.

The leak guard removes training records that *equal* an eval text before training; this module measures, after
the fact, partial overlap of any eval set with any training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from langgraft.overlap import OverlapIndex
from langgraft.errors import UserError
from langgraft.textfiles import iter_lines, json_line

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
        for line, i in iter_lines(path):
            if line.strip():
                record = json_line(line, path, i)
                if not isinstance(record, dict):
                    raise UserError(f"--contamination {path}:{i}: not a JSON object")
                yield str(record.get("text", ""))  # a record without text (a folder's other .jsonl) adds none
    elif path.is_file():
        yield from (line for line, _ in iter_lines(path))
    else:
        raise UserError(f"--contamination {path}: not found")


def build_index(paths: list[str]) -> OverlapIndex | None:
    """The training texts of `paths` with their 8-grams (`OverlapIndex.share`); None without paths."""
    if not paths:
        return None
    return OverlapIndex((t for p in paths for t in iter_training_texts(p)), grams=True)
