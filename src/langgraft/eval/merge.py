"""`langgraft eval --compare`: earlier eval outputs merged into one (models keep their names), rebuilt from their
results.json and samples/ files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from langgraft.errors import UserError
from langgraft.eval.run import write_outputs


def load_samples(run_dir: Path, task: str) -> dict[str, dict]:
    """runs-shaped {model: {"ids", "stats"}} for one task, rebuilt from samples/TASK.jsonl."""
    per_model: dict[str, dict] = {}
    path = run_dir / "samples" / f"{task}.jsonl"
    if not path.is_file():
        return per_model
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        entry = per_model.setdefault(row["model"], {"ids": [], "rows": {}})
        entry["ids"].append(row["id"])
        for metric, vec in row["stats"].items():
            entry["rows"].setdefault(metric, []).append(vec)
    return {m: {"ids": e["ids"], "stats": {k: np.array(v, dtype=float) for k, v in e["rows"].items()}}
            for m, e in per_model.items()}


def compare(dirs: list[str], out: str | Path) -> dict:
    """`eval --compare`: merge earlier eval outputs into `out`, an eval output like any other (same guards)."""
    from langgraft.rundir import run_stage

    for d in map(Path, dirs):
        if not (d / "results.json").is_file():
            raise UserError(f"--compare {d}: no results.json (not a langgraft eval output)")
    state: dict = {}

    def work(tmp: Path) -> dict:
        state["doc"] = merge_evals(dirs, tmp)
        return {"errors": len(state["doc"]["errors"]), "compared": len(dirs)}

    result = run_stage(out, stage="eval", config={"compare": [str(d) for d in dirs]}, inputs=list(dirs), work=work)
    if result.skipped:
        return json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    return state["doc"]


def read_results(path: Path) -> dict:
    """An earlier eval's results.json, its task and suite names checked: they become file names here
    (samples/TASK.jsonl, charts/SUITE.png), so a crafted one must not name a file outside the output."""
    from langgraft.rundir import check_name

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"--compare {path}: not a langgraft results.json ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or not isinstance(doc.get("models"), dict):
        raise UserError(f"--compare {path}: not a langgraft results.json (no models and tasks)")
    for task, meta in doc["tasks"].items():
        check_name(task, f"--compare {path}: tasks")
        suites = meta.get("suites") or [] if isinstance(meta, dict) else None
        if not isinstance(suites, list):
            raise UserError(f"--compare {path}: tasks.{task}: not a task entry")
        for suite in suites:
            check_name(suite, f"--compare {path}: tasks.{task}.suites")
    return doc


def merge_evals(dirs: list[str], out: Path) -> dict:
    """Merge earlier eval outputs into folder `out` (models keep their names; a clash gets `@folder`)."""
    models: dict = {}
    meta: dict = {}
    runs: dict = {}
    samples: dict[str, list[dict]] = {}
    errors: list[str] = []
    for d in map(Path, dirs):
        path = d / "results.json"
        if not path.is_file():
            raise UserError(f"--compare {d}: no results.json (not a langgraft eval output)")
        doc = read_results(path)
        errors += doc.get("errors", [])
        rename = {m: (m if m not in models else f"{m}@{d.name}") for m in doc["models"]}
        for m, new in rename.items():
            models[new] = doc["models"][m]
            runs.setdefault(new, {})
        for t, tm in doc["tasks"].items():
            meta.setdefault(t, tm)
            for m, run in load_samples(d, t).items():
                if m in rename:
                    runs[rename[m]][t] = {**run, "tokenizer": doc.get("tokenizers", {}).get(m),
                                          "speed": doc.get("speed", {}).get(m, {}).get(t)}
            path = d / "samples" / f"{t}.jsonl"
            for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
                row = json.loads(line)
                row["model"] = rename.get(row["model"], row["model"])
                samples.setdefault(t, []).append(row)
    return write_outputs(out, models, meta, runs, samples, errors)
