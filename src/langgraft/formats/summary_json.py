"""`summary.json`: the run report's figures (`langgraft run`'s `report/` stage).

`langgraft run` prints it when the pipeline ends and the model card quotes its tokenizer fertility. Shape: the
primary endpoints and per-task scores by kind and language, the arm (method or control), each training stage's
figures, the printed lines and the training charts.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.rundir import write_json
from langgraft.textfiles import read_json_object

NAME = "summary.json"


def write_summary(folder: Path, summary: dict) -> None:
    write_json(folder / NAME, summary)


def read_summary(folder: str | Path) -> dict | None:
    """The report's summary in `folder`, or None when the folder holds none."""
    path = Path(folder) / NAME
    return read_json_object(path) if path.is_file() else None
