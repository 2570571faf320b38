"""Leak guard: hashes of normalised evaluation texts, and the after-the-fact overlap check on prepared data.

Eval texts and their lines, normalised by their language's normaliser as the training text is, go into an
`overlap.OverlapIndex`; a training record leaks when one of its texts, fields or their lines has the words of an
indexed text (`OverlapIndex.matches`). Eval texts (and their lines) shorter than `min_chars` are not indexed:
generic snippets such as "خیلی خوب بود" would otherwise knock out unrelated documents.

What is guarded is read from the evaluation tasks themselves (`leak_guard.tasks`, default every shipped task; a
recipe adds the tasks it evaluates): each task's data file(s) through the eval's own reader, every text a task
shows or scores (its prompt fields, references, choices, intrinsic text): a second, hand-written list of evaluated
files would drift from the tasks, and a recipe would train on what is evaluated. A task's few-shot pool
(`shots_data`) is not guarded: those examples are context, not scored. `leak_guard.eval_sets` adds further files
(e.g. a task's train split). A task whose data is not under the tasks root is reported (`tasks_not_found`), not an
error: a data folder need not hold every shipped benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraft.data.config import DatasetConfig, LeakGuardConfig, PrepareConfig
from langgraft.overlap import OverlapIndex
from langgraft.data.readers import explode, field_text, plan_units, read_unit
from langgraft.textfiles import expand_paths
from langgraft.lang import DEFAULT_TARGET, get_language


def eval_texts(cfg: PrepareConfig) -> dict[str, list[str]]:
    """Normalised eval texts and lines (≥ min_chars) per eval set name (`task NAME` for a task)."""
    guard: LeakGuardConfig = cfg.leak_guard
    root = Path(cfg.root)
    out: dict[str, list[str]] = task_texts(cfg)
    for ev in guard.eval_sets:
        lang_code = ev.source.lang or DEFAULT_TARGET
        lang = get_language(lang_code, **cfg.normalizer.get(lang_code, {}))
        texts: list[str] = []
        # Plan as a one-source monolingual dataset so every reader (and its error messages) is shared.
        ds = DatasetConfig(name=f"leak_guard.{ev.name}", sources=[ev.source])
        for unit in plan_units(ds, root, chunk_bytes=1 << 62):
            for record, where in read_unit(unit, ev.source, False, {}):
                for rec in explode(record, ev.source.records, where):
                    for name in ev.fields:
                        texts += _index_parts(field_text(rec, name, where), lang, guard.min_chars)
        out[ev.name] = texts
    return out


def _index_parts(value: str, lang, min_chars: int) -> list[str]:
    """A text and each of its lines, normalised, those long enough to match on."""
    norms = (lang.normalize(part).strip() for part in [value, *value.split("\n")])
    return [n for n in norms if len(n) >= min_chars]


def guarded_tasks(cfg: PrepareConfig) -> list[tuple[Any, list[Path]]]:
    """(TaskSpec, its data files) of every task in `leak_guard.tasks`, files resolved against the tasks root."""
    from langgraft.eval.tasks import load_task, resolve_tasks

    root = Path(cfg.leak_guard.tasks_root or cfg.root)
    out = []
    for path in resolve_tasks(cfg.leak_guard.tasks):
        spec = load_task(path)
        rels = list(spec.data.files.values()) if spec.data.format == "parallel" else [spec.data.path]
        out.append((spec, [root / rel for rel in rels]))
    return out


def missing_tasks(cfg: PrepareConfig) -> dict[str, str]:
    """Guarded tasks whose data is not under the tasks root: name -> the first absent file."""
    return {spec.name: str(next(f for f in files if not f.is_file()))
            for spec, files in guarded_tasks(cfg) if not all(f.is_file() for f in files)}


def task_texts(cfg: PrepareConfig) -> dict[str, list[str]]:
    """Normalised texts of every guarded task whose data is present: `task NAME` -> texts."""
    from langgraft.eval.records import read_records

    root = Path(cfg.leak_guard.tasks_root or cfg.root)
    out: dict[str, list[str]] = {}
    for spec, files in guarded_tasks(cfg):
        if not all(f.is_file() for f in files):
            continue
        lang = get_language(spec.lang, **cfg.normalizer.get(spec.lang, {}))
        records, _shown = read_records(spec.data, root, spec.name)
        texts: list[str] = []
        for record in records:
            for value in task_values(spec, record):
                texts += _index_parts(value, lang, cfg.leak_guard.min_chars)
        out[f"task {spec.name}"] = texts
    return out


def task_values(spec, record: dict) -> list[str]:
    """Every text of one record that the task shows or scores; a field the record lacks contributes nothing."""
    from langgraft.eval.records import get_path

    paths = [*spec.fields.values(), spec.target, spec.text, spec.choices_field]
    values = []
    for path in filter(None, paths):
        try:
            value = get_path(record, path)
        except KeyError:
            continue
        values += _strings(value)
    return values


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def build_index(cfg: PrepareConfig, path: Path) -> dict:
    """Save the eval texts' `OverlapIndex` to `path` (.npy); return how many texts each eval set / task
    contributed (`eval_texts`) and which guarded tasks had no data under the tasks root (`tasks_not_found`)."""
    texts = eval_texts(cfg)
    OverlapIndex(t for ts in texts.values() for t in ts).save(path)
    return {"eval_texts": {name: len(ts) for name, ts in texts.items()}, "tasks_not_found": missing_tasks(cfg)}


def overlap(train_texts, index: OverlapIndex) -> int:
    """How many training rows share a text or a line with the eval index (must be 0 after prepare)."""
    return sum(1 for parts in train_texts if index.matches(parts))


def expand_eval_paths(cfg: PrepareConfig) -> list[Path]:
    """Every guarded file that exists (the prepared output's fingerprint covers them)."""
    paths: list[Path] = [f for _spec, files in guarded_tasks(cfg) for f in files if f.is_file()]
    for i, ev in enumerate(cfg.leak_guard.eval_sets):
        if ev.source.reader != "hf":
            paths += expand_paths(ev.source.path, Path(cfg.root), f"leak_guard.eval_sets[{i}].source")
    return paths
