"""Read what `langgraft data prepare` wrote: `DIR/<dataset>/dataset.json` and its Parquet shards.

Training streams texts with `iter_texts(dataset_dir, split)` (bounded memory: one record batch at a time);
small data (eval, tests) can take `load_records(dataset_dir, split)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from langgraft.errors import UserError
from langgraft.formats.dataset_json import NAME as DATASET_JSON, dataset_info, is_prepared

BATCH = 1024


def prepared_split(spec: str | Path, default_split: str) -> tuple[Path, str] | None:
    """`DIR` or `DIR:SPLIT` naming a prepared dataset (a folder holding dataset.json) → (DIR, SPLIT); None when
    `spec` names no prepared dataset (e.g. a .txt file). Lets the text-reading verbs take `data prepare` output."""
    text = str(spec)
    if is_prepared(text):
        return Path(text), default_split
    head, sep, split = text.rpartition(":")
    if sep and split and "/" not in split and is_prepared(head):
        return Path(head), split
    return None


def split_files(dataset_dir: str | Path, split: str) -> list[Path]:
    info = dataset_info(dataset_dir)
    if split not in info["splits"]:
        raise UserError(f"{dataset_dir}: no split {split!r} (has: {', '.join(info['splits'])})")
    from langgraft.rundir import check_relative

    where = f"{Path(dataset_dir) / DATASET_JSON}: splits.{split}.files"
    return [Path(dataset_dir) / check_relative(name, where, "the dataset folder") for name in info["splits"][split]["files"]]


def iter_records(dataset_dir: str | Path, split: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    for path in split_files(dataset_dir, split):
        for batch in parquet_batches(path, columns):
            yield from batch.to_pylist()


def parquet_batches(path: str | Path, columns: Sequence[str] | None = None, batch_size: int = BATCH):
    """Record batches of a Parquet file; a damaged file (cut short, not Parquet, a broken page) is one UserError
    line naming it, whether the damage shows when it is opened or halfway through."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable Parquet file ({first})") from None


def iter_texts(dataset_dir: str | Path, split: str) -> Iterator[str]:
    """The `text` column (next-token training text) of one split, streamed."""
    for row in iter_records(dataset_dir, split, columns=["text"]):
        yield row["text"]


def load_records(dataset_dir: str | Path, split: str) -> list[dict]:
    """All rows of one split as dicts (for small data)."""
    return list(iter_records(dataset_dir, split))
