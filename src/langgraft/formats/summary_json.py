"""`summary.json`: the run report's figures (`langgraft run`'s `report/` stage).

`langgraft run` prints it when the pipeline ends and the model card quotes its tokenizer fertility. Shape: the
primary endpoints and per-task scores by kind and language, the arm (method or control), each training stage's
figures, the printed lines and the training charts.
"""

from __future__ import annotations

import json
from pathlib import Path

from langgraft.errors import UserError
from langgraft.rundir import write_json

NAME = "summary.json"


def write_summary(folder: Path, summary: dict) -> None:
    write_json(folder / NAME, summary)


def read_summary(folder: str | Path) -> dict | None:
    """The report's summary in `folder`, or None when the folder holds none."""
    path = Path(folder) / NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a langgraft {NAME} ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a langgraft {NAME} (not a JSON object)")
    return doc
