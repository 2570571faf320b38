"""Per-process peak RSS of the packed training data, a small corpus vs a large one: loading it on a training rank,
and tokenizing it into the cache (with 1 and 2 tokenizing workers, and how long that takes).

- baseline ("old"): the cache as langgraft kept it before (`data.pt`, int32 in a torch.save zip), loaded the way
  every rank loaded it: `torch.load` of the whole file, then `.long()`: the whole corpus in each rank's RAM as int64;
- ours ("new"): the `packed-data/` cache (`train.npy`, int32) opened by `langgraft.train.data` (`Blocks`: mapped
  for its shape, each micro-batch's rows read from the file with `os.pread` and copied out as int64).
Each side, in its own child process (so the peak RSS is its own), loads the cache, computes the data checksum a
checkpoint records (`data_digest`) and draws `--batches` micro-batches of 8 × 512 tokens by the training order
(`batch_indices`). The token ids are synthetic (uniform below a 49,152 vocabulary; RSS does not depend on their
values), packed into blocks of 512. Default sizes: 25M and 500M tokens, 100 MB and 2 GB of int32 (a text corpus
of 2 GB is ~500M tokens at 4 bytes a token).
Peak RSS counts file pages a process maps (the checksum reads the file, not the mapping; rows read with pread
come from the page cache without being mapped); each side also prints its private (RssAnon) and mapped-file
(RssFile) memory at the end.
Tokenizing (`langgraft.train.tokenize.write_blocks`, what rank 0 runs to fill the cache): real Persian news text
(shared data, repeated to size, one document a line) tokenized by a real tokenizer (`--tokenizer`, SmolLM2's by
default) into blocks of 512, in a child process per (size, side); peak RSS of the tokenizing process and of its
largest worker, seconds, MB of text a second. Sides (`TOKENIZE_SIDES`): each batch through the tokenizer's own
call (the cache's encoding before) vs the backend's offset-free batch call (now), and 1 vs 2 workers with the
tokenizers library's own threads on (as a run has them) and off in every process (as each worker has them). The default text sizes are smaller than the loading side's: this
tokenizer reads ~1 MB of Persian a second a core, so a 2 GB text corpus is half an hour of tokenizing.
RESULT metric = ours' peak RSS ratio large ÷ small when loading (1 = flat), baseline = old's ratio,
ratio = baseline ÷ metric.

    python bench/train_data.py [--small 2.5e7] [--large 5e8] [--batches 200] [--text-small 1e7] [--text-large 1e8]
        [--tokenizer DIR] [--work DIR] [--tokenize-only]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BLOCK, MICRO, VOCAB = 512, 8, 49_152
NEWS = "persian_news/exploring-datasets/news"  # under the shared data folder ($LANGGRAFT_DATA)


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


def write_text(work: Path, size: float) -> Path:
    """A text corpus of about `size` bytes, one document a line: the shared Persian news paragraphs repeated."""
    news = Path(os.environ.get("LANGGRAFT_DATA", "/work/shared/data")) / NEWS
    docs = []
    for path in sorted(news.glob("*.json")):
        for article in json.loads(path.read_text(encoding="utf-8")):
            for field in ("title", "abstract", "paragraphs"):
                value = article.get(field) or []
                docs += [" ".join(t.split()) for t in (value if isinstance(value, list) else [value])]
    docs = [d for d in docs if d]
    out = work / f"text-{size:.0e}.txt"
    written = 0
    with out.open("w", encoding="utf-8") as fh:
        for doc in itertools.cycle(docs):
            if written >= size:
                break
            written += len(doc.encode()) + 1
            fh.write(doc + "\n")
    return out


def tokenize_side(text: Path, tokenizer: str, workers: int, path: str) -> dict:
    """In this (child) process: tokenize `text` into a blocks file with `workers` workers; peak RSS, seconds.
    path "wrapper": every batch through the tokenizer's own call (the cache's encoding before the offset-free
    backend call; 1 worker only, a spawned worker would not see the switch)."""
    import threading
    import time

    from transformers import AutoTokenizer

    import langgraft.train.tokenize as tokenize
    from langgraft.train.tokenize import write_blocks

    if path == "wrapper":
        tokenize._batch_ids = lambda tok, texts: tok(texts, add_special_tokens=False)["input_ids"]

    tok = AutoTokenizer.from_pretrained(tokenizer)
    tok.model_max_length = 1 << 30  # long paragraphs are tokenized whole, as training does; no warning
    before = peak_rss_mb()
    stop, workers_peak = threading.Event(), [0.0]
    watcher = threading.Thread(target=watch_children, args=(stop, workers_peak), daemon=True)
    watcher.start()
    start = time.perf_counter()
    with text.open(encoding="utf-8") as fh:
        done = write_blocks((line.rstrip("\n") for line in fh), tok, BLOCK, text.with_suffix(f".{workers}.npy"),
                            workers=workers)
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    text.with_suffix(f".{workers}.npy").unlink()
    return {"workers": workers, "path": path, "seconds": round(seconds, 1), "mb_per_s": round(text.stat().st_size / 1e6 / seconds, 2),
            "tokens": done.tokens, "peak_rss_mb": status_mb("VmHWM"), "before_mb": before,
            "worker_peak_mb": workers_peak[0]}


def watch_children(stop, peak: list[float]) -> None:
    """The largest peak RSS (VmHWM) of this process's children (the tokenizing workers), read every 0.2 s:
    ru_maxrss of children would report the parent's size, which a spawned child has between fork and exec."""
    me = os.getpid()
    while not stop.wait(0.2):
        try:
            children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                peak[0] = max(peak[0], status_mb("VmHWM", pid))
            except (OSError, RuntimeError):
                pass  # a child that just ended


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which keeps the forking parent's)."""
    return status_mb("VmHWM")


def status_mb(field: str, pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def child(*args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def loading(work: Path, sizes: dict[str, int], batches: int) -> dict[str, dict[str, float]]:
    """Peak RSS of each side loading each size's cache, printed as it goes."""
    peaks: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    for label, tokens in sizes.items():
        folder = write_caches(work, tokens)
        for side in ("old", "new"):
            got = child("--child", side, str(folder), "--batches", str(batches))
            peaks[side][label] = got["peak_rss_mb"]
            print(f"{label} corpus {tokens / 1e6:.0f}M tokens ({tokens * 4 / 1e6:.0f} MB int32): {side}: "
                  f"peak RSS {got['peak_rss_mb']} MB (before loading {got['before_load_mb']} MB); at the end "
                  f"{got['private_mb']} MB private + {got['file_mb']} MB mapped file pages; "
                  f"checksum {got['digest']}", flush=True)
        shutil.rmtree(folder)
    return peaks


# (encoding path, workers, the tokenizers library's own threads): the wrapper's call against the backend's
# offset-free batch call; then workers with the library's threads off in every process (as in a worker), which is
# what workers add on a machine whose cores one process's threads do not already fill
TOKENIZE_SIDES = (("wrapper", 1, True), ("fast", 1, True), ("fast", 2, True), ("fast", 1, False), ("fast", 2, False))


def tokenizing(work: Path, sizes: dict[str, float], tokenizer: str) -> None:
    """Seconds and peak RSS of tokenizing each size of text on each of `TOKENIZE_SIDES`, printed as it goes."""
    for label, size in sizes.items():
        text = write_text(work, size)
        for path, workers, threads in TOKENIZE_SIDES:
            env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}  # as a run has it
            if not threads:
                env["TOKENIZERS_PARALLELISM"] = "false"
            got = child("--tokenize", str(text), tokenizer, str(workers), path, env=env)
            print(f"tokenizing {label} text {size / 1e6:.0f} MB ({got['tokens'] / 1e6:.1f}M tokens), {path} call, "
                  f"{workers} worker(s), library threads {'on' if threads else 'off'}: {got['seconds']} s "
                  f"({got['mb_per_s']} MB/s); peak RSS {got['peak_rss_mb']} MB (before {got['before_mb']} MB), "
                  f"largest worker {got['worker_peak_mb']} MB", flush=True)
        text.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=float, default=2.5e7)
    parser.add_argument("--large", type=float, default=5e8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--text-small", type=float, default=1e7)
    parser.add_argument("--text-large", type=float, default=1e8)
    parser.add_argument("--tokenizer", default="/work/models/SmolLM2-135M-Instruct")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--tokenize", nargs=4)
    parser.add_argument("--tokenize-only", action="store_true", help="the tokenizing table only, no RESULT")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]), args.batches)))
        return
    if args.tokenize:
        print(json.dumps(tokenize_side(Path(args.tokenize[0]), args.tokenize[1], int(args.tokenize[2]), args.tokenize[3])))
        return
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tokenizing(Path(tmp), {"small": args.text_small, "large": args.text_large}, args.tokenizer)
        if args.tokenize_only:
            return
        peaks = loading(Path(tmp), {"small": int(args.small), "large": int(args.large)}, args.batches)
    new = peaks["new"]["large"] / peaks["new"]["small"]
    old = peaks["old"]["large"] / peaks["old"]["small"]
    print(f"RESULT metric={new:.3f} baseline={old:.3f} ratio={old / new:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
