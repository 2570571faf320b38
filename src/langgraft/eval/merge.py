"""`langgraft eval --compare`: earlier eval outputs merged into one (models keep their names), rebuilt from their
results.json and samples/ files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from langgraft.eval.run import write_outputs
from langgraft.formats.results_json import read_results, results_path
from langgraft.rundir import StageResult


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


def compare(dirs: list[str], out: str | Path, *, force: bool = False) -> StageResult:
    """`eval --compare`: merge earlier eval outputs into `out`, an eval output like any other (same guards)."""
    from langgraft.rundir import run_stage

    for d in dirs:
        results_path(d, where="--compare")
    state: dict = {}

    def work(tmp: Path) -> dict:
        state["doc"] = merge_evals(dirs, tmp)
        return {"errors": len(state["doc"]["errors"]), "compared": len(dirs)}

    result = run_stage(out, stage="eval", config={"compare": [str(d) for d in dirs]}, inputs=list(dirs), work=work,
                       force=force)
    result.data = json.loads(results_path(out).read_text(encoding="utf-8")) if result.skipped else state["doc"]
    return result


def merge_evals(dirs: list[str], out: Path) -> dict:
    """Merge earlier eval outputs into folder `out` (models keep their names; a clash gets `@folder`)."""
    models: dict = {}
    meta: dict = {}
    runs: dict = {}
    samples: dict[str, list[dict]] = {}
    errors: list[str] = []
    for d in map(Path, dirs):
        doc = read_results(d)
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
