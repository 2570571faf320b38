"""`langgraft data prepare`: plan, run the datatrove stages per dataset, publish one atomic output folder.

Partial progress lives in a hidden work folder next to the output (`.OUT.work/`, keyed by the config and input
fingerprint): datatrove's per-task completion markers there make an interrupted run restart from finished tasks.
The output itself is built by `rundir.run_stage` (temp folder + rename, manifest.json), so a failed run leaves no
partial output; the work folder is removed after a successful publish.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from langgraft.config import to_dict
from langgraft.data import leaks
from langgraft.overlap import OverlapIndex
from langgraft.data.config import DatasetConfig, PrepareConfig
from langgraft.data.engine import run_dataset, stage_pipelines
from langgraft.data.load import iter_records
from langgraft.data.readers import plan_units
from langgraft.errors import UserError
from langgraft.formats.dataset_json import write_dataset_info
from langgraft.outfiles import open_output
from langgraft.rundir import StageResult, check_name, run_stage, sha256_path, write_json

SPLITS = ("train", "validation")
RUN_PLACE = ("workers", "executor", "slurm", "ray")  # config keys that say where the tasks run, not what they do
LEAK_COLUMNS = {"monolingual": ["text"], "bilingual": ["src", "tgt"],
                "instructions": ["instruction", "input", "output", "messages"]}


def prepare(cfg: PrepareConfig, out: str | Path, *, force: bool = False, progress: bool = True,
            keep_work: bool = False, on_stage: Callable[[str, str], None] | None = None) -> StageResult:
    """Prepare every dataset of `cfg` into `out` (the result's `summary` is stats.json's totals). With executor:
    slurm and tasks left to run, the stages' job chain is submitted instead and the result's summary is
    {"submitted": {"jobs", "record"}}: the same call publishes once the jobs have finished (`executors.py`).

    `on_stage(dataset, stage)` is called as each engine stage starts (benchmarks time the stages with it)."""
    from langgraft.data.executors import need_ray, submit_slurm

    if cfg.executor == "ray":
        need_ray()  # before any work
    if cfg.executor == "slurm":
        submitted = submit_slurm(cfg, out)
        if submitted:
            return StageResult(Path(out), {"summary": {"submitted": submitted}}, skipped=False)
    plans, inputs, wd = _plan(cfg, Path(out))
    out, config = Path(out), to_dict(cfg)

    def work(tmp: Path) -> dict:
        started = time.time()
        guard = _prepare_work(cfg, wd, inputs)
        with _engine_logs(wd) as stream:
            stats = {}
            for ds in cfg.datasets:
                dwd = wd / ds.name
                bar = _Progress(stream, ds.name, plans[ds.name], dwd) if progress else None

                def stage(name: str, logging_dir: Path, tasks: int, ds_name: str = ds.name, bar=bar) -> None:
                    if bar:
                        bar.stage(name, logging_dir, tasks)
                    if on_stage:
                        on_stage(ds_name, name)

                try:
                    run_dataset(cfg, ds, plans[ds.name], dwd, str(wd / "eval_hashes.npy"), on_stage=stage)
                finally:
                    if bar:
                        bar.close()
                stats[ds.name] = _dataset_stats(ds, plans[ds.name], dwd)
                _publish(ds, dwd, tmp / ds.name, stats[ds.name])
        summary = _totals(stats, time.time() - started)
        summary["leak_guard"] = {**guard, "removed": sum(
            s["dropped"].get("eval_leak", 0) for s in stats.values()),
            "overlap_after": _overlap_after(cfg, tmp, wd / "eval_hashes.npy")}
        write_json(tmp / "stats.json", {**summary, "datasets": stats})
        (tmp / "preview.md").write_text(_preview(cfg, tmp), encoding="utf-8")
        return summary

    result = run_stage(out, stage="data prepare", config=config, inputs=inputs, work=work, force=force)
    if not keep_work:
        shutil.rmtree(wd, ignore_errors=True)
    return result


def cluster_stages(cfg: PrepareConfig, out: str | Path) -> list[tuple[str, str, list, int, Path]]:
    """(dataset, stage, pipeline, tasks, logging_dir) for every stage, in order, with the work folder set up, for
    running on another datatrove executor (Slurm, Ray: docs/DATA.md). Afterwards `prepare(cfg, out)` finds every
    task finished and only publishes."""
    plans, inputs, wd = _plan(cfg, Path(out))
    _prepare_work(cfg, wd, inputs)
    leak_file = str(wd / "eval_hashes.npy")
    return [(ds.name, name, pipeline, tasks, wd / ds.name / "logs" / name) for ds in cfg.datasets
            for name, pipeline, tasks in stage_pipelines(cfg, ds, plans[ds.name], wd / ds.name, leak_file)]


def _plan(cfg: PrepareConfig, out: Path) -> tuple[dict[str, list[dict]], list[str], Path]:
    _validate(cfg)
    plans = {ds.name: plan_units(ds, Path(cfg.root), cfg.chunk_mb << 20) for ds in cfg.datasets}
    inputs = sorted({u[k] for units in plans.values() for u in units for k in ("path", "path2")
                     if k in u and u["reader"] != "hf"} | {str(p) for p in leaks.expand_eval_paths(cfg)})
    return plans, inputs, out.parent / f".{out.name}.work"


def _prepare_work(cfg: PrepareConfig, wd: Path, inputs: list[str]) -> dict:
    # Where and on how many workers the tasks run changes no result, so a resumed run may use other ones.
    _reset_if_stale(wd, {k: v for k, v in to_dict(cfg).items() if k not in RUN_PLACE}, inputs)
    return leaks.build_index(cfg, wd / "eval_hashes.npy")


def _validate(cfg: PrepareConfig) -> None:
    if not cfg.datasets:
        raise UserError("config: datasets is empty")
    names = [ds.name for ds in cfg.datasets]
    for i, ds in enumerate(cfg.datasets):
        check_name(ds.name, f"config: datasets[{i}].name")
        if names.count(ds.name) > 1:
            raise UserError(f"config: datasets[{i}].name {ds.name!r} is used twice")
        if not ds.sources:
            raise UserError(f"config: datasets[{i}].sources is empty ({ds.name})")
        if not 0.0 <= ds.validation_fraction <= 1.0:
            raise UserError(f"config: datasets[{i}].validation_fraction must be in [0, 1]")
    if cfg.workers < 1:
        raise UserError("config: workers must be >= 1")


def _reset_if_stale(wd: Path, config: dict, inputs: list[str]) -> None:
    """Reuse finished tasks only when config and inputs are unchanged."""
    key = json.dumps({"config": config, "inputs": {p: sha256_path(p) for p in inputs}}, sort_keys=True)
    stamp = wd / "fingerprint.json"
    if wd.exists() and (not stamp.is_file() or stamp.read_text(encoding="utf-8") != key):
        shutil.rmtree(wd)
    wd.mkdir(parents=True, exist_ok=True)
    with open_output(stamp, "w") as fh:  # the work folder is kept between runs: never write through a link
        fh.write(key)


@contextlib.contextmanager
def _engine_logs(wd: Path) -> Iterator:
    """datatrove (and its worker processes) log to fd 2; send that to W/logs/engine.log, keep our bar visible."""
    (wd / "logs").mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    stream = os.fdopen(os.dup(saved), "w")
    with open_output(wd / "logs" / "engine.log", "a") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield stream
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            stream.close()


class _Progress:
    """One tqdm bar per engine phase, polled by a thread: the first phase (reading and cleaning) over the dataset's
    input bytes (MB/s, records/s, ETA) from the per-task progress files; each later phase (dedup, writing) over its
    tasks, from datatrove's completion markers. A single bytes bar would sit at "100%, ETA 00:00" through them.
    `close()` is safe to call twice."""

    def __init__(self, stream, name: str, units: list[dict], wd: Path):
        from langgraft.consolelog import mirror

        self.stream, self.name, self.wd = mirror(stream), name, wd
        self.stop, self.lock, self.completions = threading.Event(), threading.Lock(), None
        self.bar = self._bar(total=sum(u["bytes"] for u in units) or None, unit="B", unit_scale=True, desc=name)
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _bar(self, **kwargs):
        from tqdm import tqdm

        # Not a terminal (CI, a log file): a line every 30 s instead of a redraw every 0.5 s.
        return tqdm(file=self.stream, mininterval=0.5 if self.stream.isatty() else 30, **kwargs)

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                self._update()

    def _update(self) -> None:
        if self.completions is None:
            _update(self.bar, self.wd)
        else:
            self.bar.n = min(sum(1 for _ in self.completions.glob("*")), self.bar.total or 0)
            self.bar.refresh()

    def stage(self, stage: str, logging_dir: Path, tasks: int) -> None:
        with self.lock:
            if self.completions is None and stage.startswith("A-"):  # reading: the bytes bar
                self.bar.set_description(f"{self.name} {stage}")
                return
            self._update()
            self.bar.close()
            self.completions = Path(logging_dir) / "completions"
            self.bar = self._bar(total=tasks, unit="task", desc=f"{self.name} {stage}")

    def close(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            self.thread.join()
            self._update()
            self.bar.close()


def _update(bar, wd: Path) -> None:
    records = done = 0
    for path in (wd / "progress").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            r, b = path.read_text().split()
            records, done = records + int(r), done + int(b)
    bar.n = done
    elapsed = max(time.time() - bar.start_t, 1e-6)
    bar.set_postfix_str(f"{records} records, {records / elapsed:.0f} rec/s", refresh=True)


def _read_counts(wd: Path, prefix: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((wd / "counts").glob(f"{prefix}-*.json"))]


def _dataset_stats(ds: DatasetConfig, units: list[dict], wd: Path) -> dict:
    clean, exact, final = (_read_counts(wd, p) for p in ("clean", "exact", "final"))
    dropped: dict[str, int] = {}
    per_source = [{"path": s.path, "read": 0, "kept": 0,
                   "license": s.license or _manifest_license([u["path"] for u in units if u["source"] == i])}
                  for i, s in enumerate(ds.sources)]
    broken, broken_lines, boiler = 0, [], 0
    examples: dict[str, list[str]] = {}
    for c in clean:
        for reason, n in c["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
            examples.setdefault(reason, []).extend(c["examples"].get(reason, []))
        per_source[c["source"]]["read"] += c["read"]
        per_source[c["source"]]["kept"] += c["kept"]
        broken += c.get("broken_json", 0)
        broken_lines += c.get("broken_json_lines", [])
        boiler += c.get("boilerplate_lines_removed", 0)
    for i, s in enumerate(per_source):
        if s["read"] == 0:
            raise UserError(f"datasets[{ds.name}].sources[{i}] ({s['path']}): no records")
    kept = sum(c["kept"] for c in clean)
    after_exact = sum(c["kept"] for c in exact)
    docs = sum(c["docs"] for c in final)
    splits = {s: {"records": 0, "chars": 0, "words": 0} for s in SPLITS}
    for c in final:
        for split, v in c["splits"].items():
            for k in v:
                splits[split][k] += v[k]
    return {"kind": ds.kind, "input_bytes": sum(u["bytes"] for u in units), "sources": per_source,
            "read": sum(s["read"] for s in per_source), "kept_after_filters": kept, "dropped": dropped,
            "drop_examples": {reason: locs[:3] for reason, locs in sorted(examples.items())},
            "broken_json": {"count": broken, "first_lines": broken_lines[:5]},
            "boilerplate_lines_removed": boiler, "exact_duplicates": kept - after_exact,
            "near_duplicates": after_exact - docs, "duplicate_rate": round((kept - docs) / kept, 4) if kept else 0.0,
            "documents": docs, "splits": splits}


def _manifest_license(paths: list[str]) -> str:
    """The licence a MANIFEST.tsv (with `local_path` and `license` columns, as the shared data has) in a folder
    above the files gives them, joined when they differ; "unknown" when no manifest lists them."""
    found = set()
    for name in paths:
        path, licence = Path(name).resolve(), ""
        for parent in path.parents:
            if (parent / "MANIFEST.tsv").is_file():
                licence = _manifest_rows(parent / "MANIFEST.tsv").get(path.relative_to(parent).as_posix(), "")
                break
        found.add(licence or "unknown")
    return " + ".join(sorted(found)) or "unknown"


@functools.cache
def _manifest_rows(manifest: Path) -> dict[str, str]:
    import csv

    with manifest.open(encoding="utf-8", newline="") as fh:
        return {row["local_path"]: row.get("license") or "" for row in csv.DictReader(fh, delimiter="\t")
                if row.get("local_path")}


def _publish(ds: DatasetConfig, wd: Path, dest: Path, stats: dict) -> None:
    """W/final/SPLIT/RANK.parquet → DEST/SPLIT/part-00000.parquet … (hard links: the work folder stays valid)."""
    info: dict = {"name": ds.name, "kind": ds.kind, "lang": ds.lang, "splits": {},
                  "licenses": sorted({s["license"] for s in stats["sources"]})}
    if ds.kind == "bilingual":
        info.update(lang=f"{ds.src_lang}-{ds.tgt_lang}", format=ds.format, src_lang=ds.src_lang,
                    tgt_lang=ds.tgt_lang)
    for split in SPLITS:
        files = sorted((wd / "final" / split).glob("*.parquet"))
        names = []
        for i, path in enumerate(files):
            target = dest / split / f"part-{i:05d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            names.append(f"{split}/{target.name}")
        info["splits"][split] = {"files": names, "records": stats["splits"][split]["records"]}
    dest.mkdir(parents=True, exist_ok=True)
    write_dataset_info(dest, info)


def _totals(stats: dict, wall: float) -> dict:
    nbytes = sum(s["input_bytes"] for s in stats.values())
    return {"input_bytes": nbytes, "wall_time_s": round(wall, 2), "mb_per_s": round(nbytes / 1e6 / wall, 2),
            "documents": sum(s["documents"] for s in stats.values()),
            "exact_duplicates": sum(s["exact_duplicates"] for s in stats.values()),
            "near_duplicates": sum(s["near_duplicates"] for s in stats.values())}


def _overlap_after(cfg: PrepareConfig, out: Path, index_path: Path) -> int:
    """Re-check the published train splits against the eval index (the guard's proof, not its mechanism)."""
    index = OverlapIndex.load(index_path)
    if not index.texts:
        return 0
    total = 0
    for ds in cfg.datasets:
        cols = LEAK_COLUMNS[ds.kind]
        rows = iter_records(out / ds.name, "train", columns=cols)
        total += leaks.overlap((_row_texts(row, cols) for row in rows), index)
    return total


def _row_texts(row: dict, cols: list[str]) -> list[str]:
    """The texts of a published row; a chat's `messages` contribute every turn."""
    texts = [row[c] or "" for c in cols if c != "messages"]
    return texts + [turn["content"] for turn in row.get("messages") or []]


def _preview(cfg: PrepareConfig, out: Path) -> str:
    lines = ["# Preview", ""]
    for ds in cfg.datasets:
        lines += [f"## {ds.name} ({ds.kind})", ""]
        for split in SPLITS:
            rows = []
            for row in iter_records(out / ds.name, split):
                rows.append(row)
                if len(rows) >= cfg.preview_records:
                    break
            for i, row in enumerate(rows):
                text = row["text"] if len(row["text"]) < 600 else row["text"][:600] + " …"
                lines += [f"**{split} {i + 1}** (`{row['lang']}`)", "", "```", text, "```", ""]
    return "\n".join(lines)
