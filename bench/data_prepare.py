"""Benchmark `langgraft data prepare`: throughput, memory on a synthetic corpus, dedup on the shared data.

    python bench/data_prepare.py [--small-mb 200] [--large-mb 2000] [--workers 2] [--skip-large] [--skip-shared]

1. Throughput on a synthetic Persian corpus of --small-mb (JSONL, one file, cut into 16 MB tasks), exact dedup
   only: MB/s of stages A+B+C (normalise + filters + langid + exact dedup); the MinHash stages' throughput from a
   second run with near-dup on (extra C time + D + E), reported separately.
2. Peak RSS of the whole process tree (parent, datatrove's pool, workers; sampled every 0.25 s) while preparing the
   --small-mb and the --large-mb corpus with near-dup on: memory must not grow with the corpus.
3. recipes/data/persian.yaml on ../shared/data: exact and near duplicates per dataset, leaks removed, and the
   overlap of the train output with the evaluation sets (must be 0).
The synthetic corpus is built from the shared text: random runs of 2–12 real paragraphs per document (news, Quran
verses, The Little Prince), ~4% exact reposts. Baseline: the target of 10 MB/s on the 2-core machine.
Last line: RESULT metric=<A+B+C MB/s> baseline=10 ratio=<metric/10>.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langgraft.config import load_config  # noqa: E402
from langgraft.data.config import PrepareConfig  # noqa: E402
from langgraft.data.prepare import prepare  # noqa: E402

from benchdata import DATA, news_texts  # noqa: E402


def paragraphs() -> list[str]:
    pool = news_texts("*/*.json")
    for path in sorted(glob.glob(str(DATA / "parsinlu/data/translation/quran/fa.*.norm.txt"))):
        pool += [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return pool


def make_corpus(path: Path, megabytes: int, pool: list[str], seed: int = 0) -> int:
    rng = random.Random(seed)
    target, written, recent = megabytes * 1_000_000, 0, []
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            if recent and rng.random() < 0.04:
                text = rng.choice(recent)  # an exact repost
            else:
                start = rng.randrange(len(pool))
                text = "\n".join(pool[start:start + rng.randint(2, 12)])
                recent = (recent + [text])[-1000:]
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            fh.write(line)
            written += len(line.encode("utf-8"))
    return written


class Tree:
    """This process and all its descendants, sampled every 0.25 s: peak memory as the sum of RSS (shared pages
    counted once per process, an over-estimate) and the sum of PSS (shared pages split between processes), and the
    CPU seconds of the descendants (the engine's processes; each one's last 0.25 s can be missed)."""

    def __init__(self):
        import psutil

        self.me, self.peak, self.peak_pss, self.stop = psutil.Process(), 0, 0, threading.Event()
        self.cpu: dict[int, float] = {}
        self.stage, self.stage_pss = "start", {}  # peak PSS per engine stage (set by the caller)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self.stop.wait(0.25):
            rss = pss = 0
            for proc in [self.me] + self.me.children(recursive=True):
                try:
                    info, times = proc.memory_full_info(), proc.cpu_times()
                    rss, pss = rss + info.rss, pss + info.pss
                    if proc.pid != self.me.pid:  # this process only waits (and runs this sampler)
                        self.cpu[proc.pid] = times.user + times.system
                except psutil.Error:
                    pass
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self.stage_pss[self.stage] = max(self.stage_pss.get(self.stage, 0), pss >> 20)

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run(corpus: Path, out: Path, workers: int, near: bool) -> dict:
    cfg = {"root": str(corpus.parent), "workers": workers, "datasets": [{
        "name": "synthetic", "kind": "monolingual", "lang": "fa",
        "filters": {"langid_candidates": ["fa", "ar", "ur", "ps", "ku", "en", "tg", "az", "tr"]},
        "dedup": {"exact": True, "near": near}, "sources": [{"path": corpus.name}]}]}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    marks: list[tuple[str, float, float]] = []
    started = time.time()
    with Tree() as rss:
        manifest = prepare(load_config(PrepareConfig, path), out, progress=False,
                           on_stage=lambda ds, stage: (marks.append((stage, time.time(), rss.cpu_seconds())),
                                                       setattr(rss, "stage", stage)))
        time.sleep(0.3)  # one more sample after the last stage
        ended, cpu_end = time.time(), rss.cpu_seconds()
    nxt = marks[1:] + [("end", ended, cpu_end)]
    times = {name: round(end - t, 2) for (name, t, _), (_, end, _) in zip(marks, nxt)}
    cpu = {name: round(c1 - c0, 2) for (name, _, c0), (_, _, c1) in zip(marks, nxt)}
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["datasets"]["synthetic"]
    shutil.rmtree(out)
    return {"bytes": stats["input_bytes"], "stages": times, "cpu": cpu, "total": round(ended - started, 2),
            "rss_mb": round(rss.peak / 2**20), "pss_mb": round(rss.peak_pss / 2**20), "stage_pss_mb": rss.stage_pss,
            "exact": stats["exact_duplicates"], "near": stats["near_duplicates"],
            "documents": manifest.summary["documents"]}


def shared(workers: int, tmp: Path) -> None:
    cfg = load_config(PrepareConfig, ROOT / "recipes/data/persian.yaml", [f"root={DATA}", f"workers={workers}"])
    t = time.time()
    manifest = prepare(cfg, tmp / "persian", progress=False)
    stats = json.loads((tmp / "persian/stats.json").read_text(encoding="utf-8"))
    print(f"\nrecipes/data/persian.yaml on {DATA}: {time.time() - t:.0f} s, {stats['input_bytes'] / 1e6:.1f} MB")
    for name, ds in stats["datasets"].items():
        print(f"  {name:14s} read {ds['read']:7d}  kept {ds['documents']:7d}  exact dups {ds['exact_duplicates']:5d}  "
              f"near dups {ds['near_duplicates']:4d}  eval leaks removed {ds['dropped'].get('eval_leak', 0)}")
    guard = manifest.summary["leak_guard"]
    print(f"  eval texts indexed: {sum(guard['eval_texts'].values())} ({', '.join(guard['eval_texts'])})")
    print(f"  overlap of train output with evaluation sets: {guard['overlap_after']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small-mb", type=int, default=200)
    ap.add_argument("--large-mb", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-shared", action="store_true")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores; other jobs slow the wall-clock rates)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        pool = paragraphs()
        small = tmp / "small.jsonl"
        make_corpus(small, args.small_mb, pool)
        exact = run(small, tmp / "exact", args.workers, near=False)
        near = run(small, tmp / "near", args.workers, near=True)
        mb = exact["bytes"] / 1e6
        abc = sum(exact["stages"][s] for s in ("A-clean", "B-find", "C-exact"))
        minhash = near["stages"]["C-exact"] - exact["stages"]["C-exact"] + near["stages"]["D-buckets"] + \
            near["stages"]["E-cluster"]
        print(f"\n{mb:.0f} MB synthetic, {args.workers} workers, stage seconds (exact only): {exact['stages']}")
        abc_cpu = sum(exact["cpu"][s] for s in ("A-clean", "B-find", "C-exact"))
        print(f"  normalise + filter + exact dedup (A+B+C): {abc:.1f} s = {mb / abc:.1f} MB/s wall; "
              f"{abc_cpu:.1f} CPU-s = {2 * mb / abc_cpu:.1f} MB/s on 2 uncontended cores; "
              f"whole prepare {exact['total']:.1f} s = {mb / exact['total']:.1f} MB/s")
        print(f"  CPU seconds per stage (exact only): {exact['cpu']}")
        print(f"  with near-dup, stage seconds: {near['stages']}")
        print(f"  MinHash near-dup (signatures + buckets + cluster): {minhash:.1f} s = {mb / max(minhash, 1e-9):.1f} "
              f"MB/s; whole prepare {near['total']:.1f} s; exact dups {near['exact']}, near dups {near['near']}")
        print(f"  peak memory (process tree) RSS {near['rss_mb']} MB, PSS {near['pss_mb']} MB at {mb:.0f} MB input; "
              f"peak PSS MB per stage {near['stage_pss_mb']}")
        if not args.skip_large:
            large = tmp / "large.jsonl"
            small.unlink()
            make_corpus(large, args.large_mb, pool, seed=1)
            big = run(large, tmp / "large", args.workers, near=True)
            print(f"  peak memory (process tree) RSS {big['rss_mb']} MB, PSS {big['pss_mb']} MB at "
                  f"{big['bytes'] / 1e6:.0f} MB input; peak PSS MB per stage {big['stage_pss_mb']} "
                  f"({big['total']:.0f} s, {big['bytes'] / 1e6 / big['total']:.1f} MB/s end to end, "
                  f"stages {big['stages']})")
        if not args.skip_shared:
            shared(args.workers, tmp)
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        ours = mb / abc
        print(f"RESULT metric={ours:.2f} baseline=10 ratio={ours / 10:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
