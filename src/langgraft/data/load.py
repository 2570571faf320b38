"""Read what `langgraft data prepare` wrote: `DIR/<dataset>/dataset.json` and its Parquet shards.

Training streams texts with `iter_texts(dataset_dir, split)` (bounded memory: one record batch at a time);
small data (eval, tests) can take `load_records(dataset_dir, split)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from langgraft.errors import UserError

BATCH = 1024


def dataset_info(dataset_dir: str | Path) -> dict:
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise UserError(f"{dataset_dir}: not a prepared dataset (no dataset.json); run `langgraft data prepare`")
    return json.loads(path.read_text(encoding="utf-8"))


def prepared_split(spec: str | Path, default_split: str) -> tuple[Path, str] | None:
    """`DIR` or `DIR:SPLIT` naming a prepared dataset (a folder holding dataset.json) → (DIR, SPLIT); None when
    `spec` names no prepared dataset (e.g. a .txt file). Lets the text-reading verbs take `data prepare` output."""
    text = str(spec)
    if (Path(text) / "dataset.json").is_file():
        return Path(text), default_split
    head, sep, split = text.rpartition(":")
    if sep and split and "/" not in split and (Path(head) / "dataset.json").is_file():
        return Path(head), split
    return None


def split_files(dataset_dir: str | Path, split: str) -> list[Path]:
    info = dataset_info(dataset_dir)
    if split not in info["splits"]:
        raise UserError(f"{dataset_dir}: no split {split!r} (has: {', '.join(info['splits'])})")
    from langgraft.rundir import check_relative

    where = f"{Path(dataset_dir) / 'dataset.json'}: splits.{split}.files"
    return [Path(dataset_dir) / check_relative(name, where, "the dataset folder") for name in info["splits"][split]["files"]]


def iter_records(dataset_dir: str | Path, split: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for path in split_files(dataset_dir, split):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=list(columns) if columns else None):
            yield from batch.to_pylist()


def iter_texts(dataset_dir: str | Path, split: str) -> Iterator[str]:
    """The `text` column (next-token training text) of one split, streamed."""
    for row in iter_records(dataset_dir, split, columns=["text"]):
        yield row["text"]


def load_records(dataset_dir: str | Path, split: str) -> list[dict]:
    """All rows of one split as dicts (for small data)."""
    return list(iter_records(dataset_dir, split))
