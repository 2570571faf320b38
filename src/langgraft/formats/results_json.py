"""`results.json`: an evaluation's results (`langgraft eval`, or a `langgraft run` evaluation point).

`eval --compare` merges earlier ones, `langgraft run`'s report compares its points and the model card quotes them.
Shape: {"models": {name: path}, "tasks": {task: {"lang", "kind", "suites", "metrics", ...}}, "results",
"comparisons", "errors", "timing_s", "speed", "tokenizers"} (docs/EVAL.md says what each holds).
"""

from __future__ import annotations

import json
from pathlib import Path

from langgraft.errors import UserError
from langgraft.rundir import check_name, write_json

NAME = "results.json"


def write_results(folder: Path, doc: dict) -> None:
    write_json(folder / NAME, doc)


def results_path(folder: str | Path, *, where: str | None = None) -> Path:
    """`folder/results.json`; with `where` (the flag the folder came from), one UserError line when it is
    missing."""
    path = Path(folder) / NAME
    if where is not None and not path.is_file():
        raise UserError(f"{where} {folder}: no {NAME} (not a langgraft eval output)")
    return path


def read_results(folder: str | Path, where: str = "--compare") -> dict:
    """`folder/results.json`, its task and suite names checked: a reader may make file names of them
    (samples/TASK.jsonl, charts/SUITE.png), so a crafted one must not name a file outside its output. `where`
    starts each error line (the flag the folder came from)."""
    path = results_path(folder, where=where)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{where} {path}: not a langgraft {NAME} ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or not isinstance(doc.get("models"), dict):
        raise UserError(f"{where} {path}: not a langgraft {NAME} (no models and tasks)")
    for task, meta in doc["tasks"].items():
        check_name(task, f"{where} {path}: tasks")
        suites = meta.get("suites") or [] if isinstance(meta, dict) else None
        if not isinstance(suites, list):
            raise UserError(f"{where} {path}: tasks.{task}: not a task entry")
        for suite in suites:
            check_name(suite, f"{where} {path}: tasks.{task}.suites")
    return doc
