"""The datatrove pipelines behind `data prepare`: six executor stages per dataset, all restartable.

The engine is datatrove (0.10.1). What it gives and langgraft keeps:
`LocalPipelineExecutor` (a worker pool over tasks, a completion marker per task, so an interrupted run restarts
from finished tasks), the three-stage exact dedup (`ExactDedupSignature` → `ExactFindDedups` →
`ExactDedupFilter`: per-task sorted hash files merged with a heap, so memory does not grow with the corpus), the
four-stage MinHash (`MinhashDedupSignature` → `MinhashDedupBuckets` → `MinhashDedupCluster` →
`MinhashDedupFilter`; fully offline once given a whitespace word tokenizer instead of its spaCy default), and
`ParquetWriter`. The same stage list runs on `SlurmPipelineExecutor`/`RayPipelineExecutor` (docs/DATA.md).
What we plug in instead of datatrove's parts, and why: the readers (byte-range chunks of big files so one big file
still uses every worker, exact line numbers and UTF-8 offsets in errors, line-aligned parallel files — see
readers.py), language ID (py3langid offline; its fastText filter downloads a model), the filters (filters.py) and
the per-task counters (one JSON per task, so every drop is counted by reason and survives a restart).
Why it fits, measured by bench/data_prepare.py (numbers in docs/BENCHMARKS.md):
- fast enough? The engine is not the bottleneck: most of stage A's CPU is langgraft's own per-record cleaning
  (py3langid the largest part, which is why Persian that its letters identify skips it); the rest is reading,
  the JSONL work files and datatrove's signature step; stages B and C add ~10% to A.
- offline MinHash? Yes, with two settings: sha1 hashing (its xxhash path passes str, which xxhash 4.x rejects) and
  a whitespace word tokenizer (its fa/ar/en tokenizers need spaCy). Its diacritics pass is switched off (speed).
- flat memory? Peak memory of the process tree stays nearly flat from 0.1 to 2 GB of input; the part that
  grows is MinHash stage 3's in-memory union-find, with the number of duplicate pairs.
A home-made engine would have saved little time and lost the cluster executors.

Stages (work folder `W`, N = number of units):
  A clean   N tasks  read unit → normalise/filter/leak-guard → W/clean/R.jsonl + exact-dedup signatures
  B find    1 task   exact duplicates across all tasks
  C exact   N tasks  W/clean/R.jsonl → drop exact dups → W/exact/R.jsonl + MinHash signatures
  D buckets b tasks  LSH bands → candidate pairs          (skipped when dedup.near is off)
  E cluster 1 task   union-find → which docs to remove   (skipped when dedup.near is off)
  F write   N tasks  W/exact/R.jsonl → drop near dups → rows (bilingual formats) → W/final/SPLIT/R.parquet
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial
from pathlib import Path

from datatrove.utils.word_tokenizers import WordTokenizer

from langgraft.data.config import DatasetConfig, PrepareConfig
from langgraft.data.filters import clean, make_cleaner
from langgraft.overlap import OverlapIndex, content_hash
from langgraft.data.readers import chat_turns, explode, field_text, read_unit
from langgraft.data.render import render_rows
from langgraft.outfiles import open_output
from langgraft.rundir import write_json


def split_of(key: str, validation_fraction: float) -> str:
    return "validation" if content_hash("split:" + key) % 10_000 < validation_fraction * 10_000 else "train"


def dedup_key(kind: str, fields: dict) -> str:
    if kind == "monolingual":
        return fields["text"]
    if kind == "bilingual":
        return f"{fields['src']}\n{fields['tgt']}"
    return "\n".join(_instruction_parts(fields))


def _instruction_parts(fields: dict) -> list[str]:
    """The texts of an instruction record: every turn of a conversation, else instruction, input, output."""
    if fields.get("messages"):
        return [turn["content"] for turn in fields["messages"]]
    return [fields["instruction"], fields["input"], fields["output"]]


def _fields(record: dict, ds: DatasetConfig, si: int, where: str) -> dict:
    src = ds.sources[si]
    if ds.kind == "monolingual":
        return {"text": "\n".join(field_text(record, name, where) for name in src.text)}
    if ds.kind == "bilingual":
        return {"src": field_text(record, src.src, where), "tgt": field_text(record, src.tgt, where),
                "src_lang": ds.src_lang, "tgt_lang": ds.tgt_lang}
    if src.messages:
        return {"messages": chat_turns(record, src.messages, src.role, src.content, where)}
    return {"instruction": field_text(record, src.instruction, where),
            "input": field_text(record, src.input, where, required=False),
            "output": field_text(record, src.output, where)}


# ---------------------------------------------------------------- stage A
def clean_step(data, rank: int, world_size: int, *, cfg: PrepareConfig, ds: DatasetConfig, units: list[dict],
               work: str, leak_file: str):
    """Read one unit, clean it, write W/clean/RANK.jsonl and yield the kept documents (for the dedup signature)."""
    from datatrove.data import Document

    _quiet(work, "clean", rank)
    unit, wd = units[rank], Path(work)
    src = ds.sources[unit["source"]]
    lang_code = src.lang or ds.lang
    codes = {ds.src_lang, ds.tgt_lang} if ds.kind == "bilingual" else {lang_code}
    cleaner = make_cleaner(ds, cfg.normalizer, codes)
    leaks = OverlapIndex.load(leak_file)
    tally: dict = {"source": unit["source"], "bytes": unit["bytes"], "read": 0, "kept": 0, "dropped": {},
             "examples": {}}
    progress = _Progress(wd / "progress" / f"{rank:05d}")
    out_path = wd / "clean" / f"{rank:05d}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_output(str(out_path) + ".tmp", "w") as out:
        for record, where in read_unit(unit, src, cfg.strict, tally):
            for rec in explode(record, src.records, where):
                if src.limit and tally["read"] >= src.limit:
                    break
                tally["read"] += 1
                fields, reason = clean(_fields(rec, ds, unit["source"], where), lang_code, cleaner, tally)
                progress.tick(tally["read"])
                key = dedup_key(ds.kind, fields) if fields else ""
                split = split_of(key, ds.validation_fraction) if fields else ""
                if fields and split == "train" and leaks.texts and _leaks(fields, ds.kind, leaks):
                    reason = "eval_leak"
                if reason:
                    tally["dropped"][reason] = tally["dropped"].get(reason, 0) + 1
                    examples = tally["examples"].setdefault(reason, [])
                    if len(examples) < 3:
                        examples.append(where)
                    continue
                tally["kept"] += 1
                # a monolingual text is the document text itself: not stored twice in the intermediate files
                meta = {k: v for k, v in fields.items() if k != "text"}
                meta.update(lang=lang_code, split=split, source=unit["source"])
                out.write(json.dumps({"text": key, "meta": meta}, ensure_ascii=False) + "\n")
                yield Document(text=key, id=f"{rank}/{tally['kept']}", metadata=meta)
            if src.limit and tally["read"] >= src.limit:
                break
    os.replace(str(out_path) + ".tmp", out_path)
    write_json(wd / "counts" / f"clean-{rank:05d}.json", tally)
    progress.done(tally["read"], unit["bytes"])


def _leaks(fields: dict, kind: str, leaks: OverlapIndex) -> bool:
    if kind == "monolingual":
        parts = [fields["text"]]
    elif kind == "bilingual":
        parts = [fields["src"], fields["tgt"]]
    else:
        parts = _instruction_parts(fields)
    return leaks.matches(parts)


# ---------------------------------------------------------------- shared steps
def read_jsonl(data, rank: int, world_size: int, *, folder: str, work: str, stage: str):
    from datatrove.data import Document

    _quiet(work, stage, rank)
    path = Path(folder) / f"{rank:05d}.jsonl"
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            row = json.loads(line)
            yield Document(text=row["text"], id=f"{rank}/{i}", metadata=row["meta"])


def write_jsonl(data, rank: int, world_size: int, *, folder: str, counts: str):
    path = Path(folder) / f"{rank:05d}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = 0
    with open_output(str(path) + ".tmp", "w") as out:
        for doc in data:
            out.write(json.dumps({"text": doc.text, "meta": doc.metadata}, ensure_ascii=False) + "\n")
            kept += 1
            yield doc
    os.replace(str(path) + ".tmp", path)
    write_json(Path(counts.format(rank=f"{rank:05d}")), {"kept": kept})


def rows_step(data, rank: int, world_size: int, *, ds: DatasetConfig, counts: str):
    """Documents → output rows (one per row; bilingual formats make 1–2 rows per pair or group pairs)."""
    from datatrove.data import Document

    tally: dict = {"docs": 0, "splits": {}}
    for i, row in enumerate(render_rows(data, ds, tally)):
        split = row.pop("_split")
        s = tally["splits"].setdefault(split, {"records": 0, "chars": 0, "words": 0})
        s["records"] += 1
        s["chars"] += len(row["text"])
        s["words"] += len(row["text"].split())
        yield Document(text=row["text"], id=f"{rank}/{i}", metadata={"split": split, "row": row})
    write_json(Path(counts.format(rank=f"{rank:05d}")), tally)


def drain(data, rank: int, world_size: int):
    for _ in data or ():
        pass


def quiet_step(data, rank: int, world_size: int, *, work: str, stage: str):
    _quiet(work, stage, rank)
    return data


def row_adapter(writer, document) -> dict:
    return document.metadata["row"]


# ---------------------------------------------------------------- the stages
def doc_text(doc) -> str:
    # datatrove picks the hash function from this return annotation (`is bytes`); under `from __future__ import
    # annotations` it is a string, so the str variant of sha1 is used — return str to match.
    return doc.text


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands x rows <= num_perm minimising the LSH error at a Jaccard threshold: the area under
    the S-curve 1-(1-s^r)^b below the threshold (false positives) plus the area above it missed (false negatives),
    equally weighted, as datasketch's optimiser does; first (b, r) wins a tie. The integrals are smooth
    polynomials, so 64-point Gauss-Legendre on each side is exact to rounding."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(64)
    low_s, low_w = (nodes + 1) * threshold / 2, weights * threshold / 2
    high_s, high_w = threshold + (nodes + 1) * (1 - threshold) / 2, weights * (1 - threshold) / 2
    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // b + 1)[:, None]
        false_pos = (1 - (1 - low_s ** rows) ** b) @ low_w
        false_neg = ((1 - high_s ** rows) ** b) @ high_w
        error = 0.5 * false_pos + 0.5 * false_neg
        i = int(np.argmin(error))
        if error[i] < best_error:
            best, best_error = (b, int(rows[i, 0])), float(error[i])
    return best


def run_dataset(cfg: PrepareConfig, ds: DatasetConfig, units: list[dict], wd: Path, leak_file: str,
                on_stage=None) -> None:
    """Stages A–F of the module docstring on the config's executor; finished tasks are skipped (completion
    markers)."""
    for name, pipeline, tasks in stage_pipelines(cfg, ds, units, wd, leak_file):
        logging_dir = wd / "logs" / name
        if on_stage:
            on_stage(name, logging_dir, tasks)
        run_executor(pipeline, tasks=tasks, cfg=cfg, logging_dir=logging_dir)


def stage_pipelines(cfg: PrepareConfig, ds: DatasetConfig, units: list[dict], wd: Path,
                    leak_file: str) -> list[tuple[str, list, int]]:
    """(stage name, datatrove pipeline, tasks) in order: hand these to any executor (docs/DATA.md: Slurm, Ray)."""
    from datatrove.pipeline.dedup import (ExactDedupFilter, ExactDedupSignature, ExactFindDedups,
                                          MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    n, work, near, has_exact = len(units), str(wd), ds.dedup.near, ds.dedup.exact
    # sha1, not datatrove's default xxhash: its xxhash path passes str, which xxhash 4.x rejects.
    hashing = HashConfig(precision=64, hash_fc="sha1")
    exact = ExactDedupConfig(content_getter=doc_text, hash_config=hashing)
    bands, rows = lsh_params(ds.dedup.threshold, ds.dedup.num_perm)
    # Shingles see datatrove's simplify_text minus its diacritics pass: that pass is a per-character Python loop
    # (~60% of the MinHash stage's time) and the language normaliser already removed the Arabic-script marks.
    minhash = MinhashConfig(n_grams=ds.dedup.ngram, num_buckets=bands, hashes_per_bucket=rows, hash_config=hashing,
                            norm_config=TextNormConfig(norm_unicode_diacritics=False))
    (wd / "exact_dups").mkdir(parents=True, exist_ok=True)
    folder = {name: str(wd / name) for name in ("clean", "exact", "exact_sigs", "exact_dups", "mh_sigs",
                                                "mh_buckets", "mh_remove", "final")}
    stages: list[tuple[str, list, int]] = []
    a = [partial(clean_step, cfg=cfg, ds=ds, units=units, work=work, leak_file=leak_file)]
    a += [ExactDedupSignature(output_folder=folder["exact_sigs"], config=exact)] if has_exact else [drain]
    stages.append(("A-clean", a, n))
    if has_exact:
        stages.append(("B-find", [partial(quiet_step, work=work, stage="find"), ExactFindDedups(
            data_folder=folder["exact_sigs"], output_folder=folder["exact_dups"], config=exact)], 1))
    c = [partial(read_jsonl, folder=folder["clean"], work=work, stage="exact")]
    c += [ExactDedupFilter(data_folder=folder["exact_dups"], config=exact)] if has_exact else []
    c += [partial(write_jsonl, folder=folder["exact"], counts=str(wd / "counts" / "exact-{rank}.json"))]
    c += [MinhashDedupSignature(output_folder=folder["mh_sigs"], config=minhash, language=SplitWords())
          ] if near else [drain]
    stages.append(("C-exact", c, n))
    if near:
        stages.append(("D-buckets", [partial(quiet_step, work=work, stage="buckets"), MinhashDedupBuckets(
            input_folder=folder["mh_sigs"], output_folder=folder["mh_buckets"], config=minhash)], bands))
        stages.append(("E-cluster", [partial(quiet_step, work=work, stage="cluster"), MinhashDedupCluster(
            input_folder=folder["mh_buckets"], output_folder=folder["mh_remove"], config=minhash)], 1))
    f = [partial(read_jsonl, folder=folder["exact"], work=work, stage="write")]
    f += [MinhashDedupFilter(input_folder=folder["mh_remove"])] if near else []
    f += [partial(rows_step, ds=ds, counts=str(wd / "counts" / "final-{rank}.json")),
          ParquetWriter(output_folder=folder["final"], output_filename="${split}/${rank}.parquet",
                        adapter=row_adapter, use_content_defined_chunking=False)]
    stages.append(("F-write", f, n))
    return stages


class SplitWords(WordTokenizer):
    """Whitespace words for MinHash shingles: datatrove's tokenizers for fa/ar/en need spaCy models."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.split("\n") if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers
def _write(path: Path, text: str) -> None:
    """The work folder is kept between runs: its files are written only as themselves, never through a link."""
    with open_output(path, "w") as fh:
        fh.write(text)


class _Progress:
    """Per-task progress file (records read, input bytes done) that the parent polls for its progress bar."""

    def __init__(self, path: Path):
        self.path, self.last = path, 0.0
        path.parent.mkdir(parents=True, exist_ok=True)

    def tick(self, records: int) -> None:
        now = time.monotonic()
        if now - self.last > 1.0:
            self.last = now
            _write(self.path, f"{records} 0\n")

    def done(self, records: int, nbytes: int) -> None:
        _write(self.path, f"{records} {nbytes}\n")


def _quiet(work: str, stage: str, rank: int) -> None:
    """datatrove logs every task at INFO to stderr; keep that in the work folder's log files instead."""
    import multiprocess
    from loguru import logger

    if multiprocess.parent_process() is not None:  # a pool worker (workers=1 runs the tasks in-process)
        die_with_parent()
    logger.remove()
    logger.add(str(Path(work) / "logs" / f"{stage}-{rank:05d}.log"), level="INFO")


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, so a killed `data prepare` leaves no worker
    running on (pool workers, and datatrove's manager process, which this process forks)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


_fork_hook: list[bool] = []


def run_executor(pipeline: list, *, tasks: int, cfg: PrepareConfig, logging_dir: Path) -> None:
    """One stage on the config's executor, waited for (local or Ray; Slurm chains are submitted by
    `executors.submit_slurm`, and this runs only to find their tasks finished)."""
    from langgraft.data.executors import run_local, run_ray

    if cfg.executor == "ray":
        run_ray(pipeline, tasks=tasks, settings=cfg.ray, logging_dir=logging_dir)
        return
    # every fork, not only a pool's: with workers=1 the tasks run in this process but datatrove still forks its
    # manager process, which would outlive a killed parent
    if not _fork_hook:
        os.register_at_fork(after_in_child=die_with_parent)
        _fork_hook.append(True)
    run_local(pipeline, tasks=tasks, workers=cfg.workers, logging_dir=logging_dir)
