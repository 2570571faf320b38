"""Per-process peak RSS of loading the packed training data, a small corpus vs a large one.

- baseline ("old"): the cache as langgraft kept it before (`data.pt`, int32 in a torch.save zip), loaded the way
  every rank loaded it: `torch.load` of the whole file, then `.long()`: the whole corpus in each rank's RAM as int64;
- ours ("new"): the `packed-data/` cache (`train.npy`, int32) opened by `langgraft.train.data` with
  `np.load(mmap_mode="r")`; micro-batches copied out as int64.
Each side, in its own child process (so the peak RSS is its own), loads the cache, computes the data checksum a
checkpoint records (`data_digest`) and draws `--batches` micro-batches of 8 × 512 tokens by the training order
(`batch_indices`). The token ids are synthetic (uniform below a 49,152 vocabulary; RSS does not depend on their
values), packed into blocks of 512. Default sizes: 5M and 100M tokens, the 100 MB → 2 GB corpus step (20×)
scaled down to what a shared 2-core machine's disk and time allow (a 2 GB text corpus is ~500M tokens).
Peak RSS counts the cache's file pages the mapping touched (on this kernel a fault maps a whole large page-cache
folio, so 1,600 random rows of a 400 MB file map most of it): those pages are shared by every rank through the
page cache and reclaimable, unlike the int64 copy; each side also prints its private (RssAnon) and mapped-file
(RssFile) memory at the end.
RESULT metric = ours' peak RSS ratio large ÷ small (1 = flat), baseline = old's ratio, ratio = baseline ÷ metric.

    python bench/train_data.py [--small 5e6] [--large 1e8] [--batches 200] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BLOCK, MICRO, VOCAB = 512, 8, 49_152


def write_caches(work: Path, tokens: int) -> Path:
    """Both caches of one synthetic corpus of `tokens` tokens, written in chunks (never the corpus in RAM)."""
    import torch

    from langgraft.train.data import CACHE

    folder = work / f"{tokens}"
    (folder / CACHE).mkdir(parents=True, exist_ok=True)
    n_blocks = tokens // BLOCK
    rng = np.random.default_rng(0)
    train = np.lib.format.open_memmap(folder / CACHE / "train.npy", mode="w+", dtype="<i4", shape=(n_blocks, BLOCK))
    step = 1 << 16
    for start in range(0, n_blocks, step):
        part = train[start:start + step]
        part[:] = rng.integers(0, VOCAB, size=part.shape, dtype=np.int32)
    train.flush()
    (folder / CACHE / "cache.json").write_text(json.dumps({"key": "bench", "summary": {}, "chars_per_token": None}))
    # the old format: the same int32 blocks inside a torch.save zip
    torch.save({"key": "bench", "train": torch.from_numpy(np.asarray(train)), "val": None, "summary": {}},
               folder / "data.pt")
    del train
    return folder


def measure(side: str, folder: Path, batches: int) -> dict:
    """In this (child) process: load `folder`'s cache the `side` way, checksum it, draw batches; peak RSS."""
    import torch

    from langgraft.train.data import CACHE, _read_cache, batch_indices, data_digest

    before = peak_rss_mb()
    if side == "old":
        blocks = torch.load(folder / "data.pt", map_location="cpu", weights_only=True)["train"].long()
    else:
        blocks = _read_cache(folder / CACHE)[1]
    digest = data_digest(blocks, None)
    n = blocks.shape[0]
    seen = 0
    for step in range(batches):
        (idx,) = batch_indices(n, step, MICRO, accum=1, world=1, rank=0, seed=0, steps_per_epoch=n // MICRO)
        seen += int(blocks[idx].to(torch.long).sum() > 0)
    return {"side": side, "blocks": n, "peak_rss_mb": status_mb("VmHWM"), "before_load_mb": before,
            "private_mb": status_mb("RssAnon"), "file_mb": status_mb("RssFile"), "digest": digest[:12],
            "batches": seen}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which keeps the forking parent's)."""
    return status_mb("VmHWM")


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def child(side: str, folder: Path, batches: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", side, str(folder), "--batches", str(batches)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=float, default=5e6)
    parser.add_argument("--large", type=float, default=1e8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]), args.batches)))
        return
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        peaks: dict[str, dict[str, float]] = {"old": {}, "new": {}}
        for label, tokens in (("small", int(args.small)), ("large", int(args.large))):
            folder = write_caches(Path(tmp), tokens)
            for side in ("old", "new"):
                got = child(side, folder, args.batches)
                peaks[side][label] = got["peak_rss_mb"]
                print(f"{label} corpus {tokens / 1e6:.0f}M tokens ({tokens * 4 / 1e6:.0f} MB int32): {side}: "
                      f"peak RSS {got['peak_rss_mb']} MB (before loading {got['before_load_mb']} MB); at the end "
                      f"{got['private_mb']} MB private + {got['file_mb']} MB mapped file pages; "
                      f"checksum {got['digest']}", flush=True)
    new = peaks["new"]["large"] / peaks["new"]["small"]
    old = peaks["old"]["large"] / peaks["old"]["small"]
    print(f"RESULT metric={new:.3f} baseline={old:.3f} ratio={old / new:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
