"""Training data: read a prepared dataset, tokenize, pack into fixed blocks (cached per run in `packed-data/`
by `build_data`), and order batches by step.

Packing concatenates documents, each followed by EOS, and cuts the stream into `block_size` blocks: no padding,
so every position is a training token; only the tail shorter than one block is dropped (reported as packing
efficiency). The cache holds the blocks as int32 `.npy` files that every rank memory-maps: no rank holds the
corpus in its own RAM (8 ranks × 8 bytes a token was 64 GB of host RAM for a 1B-token corpus); only each
micro-batch is copied out, as the int64 ids the model takes. Batch order is a pure function of (seed, step),
which is what makes `--resume` exact: the data position is the step counter, nothing else needs saving.

Documents in a block share one causal attention (unlike packed instruction examples, which are isolated; see
`instruct.py`). Decided so because: blocks are cut from one stream at arbitrary points, so a block's first
document is nearly always a tail without its start, and isolating documents would not give the model whole
documents anyway; every position is a target, so no answer is trained to depend on an unrelated prompt, which is
the harm isolation prevents for instructions; the bases being adapted were pretrained exactly this way (EOS-joined
documents, full causal attention), so continued pretraining keeps their regime, and the EOS is there to mark the
boundary; Llama 3 reports document masking had limited impact in standard pretraining and mattered for very long
sequences, which these 1–4k blocks are not; and mask-free blocks keep every attention kernel usable, including
flash-attention with several rows per batch, which ignores restarted position ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from langgraft.errors import UserError
from langgraft.formats.dataset_json import NAME as DATASET_JSON, dataset_info
from langgraft.formats.new_tokens import NAME as NEW_TOKENS
from langgraft.rundir.training import CACHE
from langgraft.train.config import TrainConfig
from langgraft.train.cover import keep_covering_blocks



@dataclass
class Packed:
    blocks: torch.Tensor  # [n_blocks, block_size] token ids
    texts: int  # documents read
    tokens: int  # tokens produced (documents + EOS)
    chars: int  # characters of the documents (for bits per character)

    @property
    def efficiency(self) -> float:
        return self.blocks.numel() / max(self.tokens, 1)


class Blocks:
    """Packed token ids of the cache (int32 on disk), mapped for their shape and checksum; indexing reads only the
    rows asked for from the file (`os.pread`: the pages come from the page cache, one copy shared by every rank of
    the machine) into the int64 tensor the model takes. Reading rows through the mapping instead made every page
    cache folio a fault touched part of this process's RSS (on this kernel a whole large folio per fault), which grew
    a rank's memory with the corpus."""

    def __init__(self, array: np.memmap):
        self.array = array
        self.row_bytes = int(np.prod(array.shape[1:])) * array.itemsize
        self._file: tuple[int, int] | None = None  # (pid, fd): a forked process opens its own

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        if not hasattr(os, "pread"):  # no positional reads on this platform: through the mapping
            return torch.from_numpy(np.asarray(self.array[index], dtype=np.int64))
        rows = self._rows(index)
        fd, out = self._fd(), bytearray(len(rows) * self.row_bytes)
        for k, row in enumerate(rows):
            got = os.pread(fd, self.row_bytes, self.array.offset + row * self.row_bytes)
            if len(got) != self.row_bytes:
                raise OSError(f"{self.array.filename}: shorter than its header says")
            out[k * self.row_bytes:(k + 1) * self.row_bytes] = got
        lead = (len(rows),) if isinstance(index, slice) else np.shape(index)  # an int: one row, unbatched
        ids = np.frombuffer(out, dtype=self.array.dtype).reshape((*lead, *self.array.shape[1:]))
        return torch.from_numpy(ids.astype(np.int64))

    def _rows(self, index) -> list[int]:
        """The row numbers `index` (an int, a slice or an array of ints, negatives from the end) selects."""
        n = len(self)
        if isinstance(index, slice):
            return list(range(*index.indices(n)))
        rows = [int(i) for i in np.atleast_1d(np.asarray(index)).ravel()]
        if any(i < -n or i >= n for i in rows):
            raise IndexError(f"row index out of range for {n} blocks")
        return [i + n if i < 0 else i for i in rows]

    def _fd(self) -> int:
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), os.open(self.array.filename, os.O_RDONLY))
        return self._file[1]

    def __del__(self):
        if getattr(self, "_file", None) is not None and self._file[0] == os.getpid():
            os.close(self._file[1])


class SplitTexts:
    """The texts (or with `rows`, the whole records) of one split of a `langgraft data prepare` dataset (the corpus
    package owns the format), streamed; sized from dataset.json, so tokenizing can say how many documents it has
    ahead and show a bar with an ETA."""

    def __init__(self, dataset_dir: str | Path, split: str, rows: bool = False):
        self.dataset_dir, self.split, self.rows = Path(dataset_dir), split, rows
        self.records = int(dataset_info(dataset_dir)["splits"].get(split, {}).get("records") or 0)

    def __len__(self) -> int:
        return self.records

    def __iter__(self):
        from langgraft.data.load import iter_records, iter_texts

        if self.rows:
            return iter(iter_records(self.dataset_dir, self.split))
        return iter(iter_texts(self.dataset_dir, self.split))

    def __str__(self) -> str:
        return f"{self.dataset_dir.name} ({self.split})"


def iter_texts(dataset_dir: str | Path, split: str) -> SplitTexts:
    return SplitTexts(dataset_dir, split)


def has_split(dataset_dir: str | Path, split: str) -> bool:
    return bool(dataset_info(dataset_dir)["splits"].get(split, {}).get("files"))


def tokenizing(items, what: str, block_size: int, limit: int = 0):
    """`items`, with a line saying what is tokenized (how many, of which dataset split) and a bar: said before the
    first step, since a corpus of GBs tokenizes for minutes before the step bar appears."""
    from tqdm import tqdm

    total = len(items) if hasattr(items, "__len__") else None
    if total is not None and limit:
        total = min(total, limit)
    print(f"langgraft train: tokenizing {'' if total is None else f'{total:,} '}{what}"
          f"{f' of {items}' if isinstance(items, SplitTexts) else ''} into blocks of {block_size} tokens",
          file=sys.stderr, flush=True)
    # disable=None: the bar on terminals only, the line above in logs/tests
    return tqdm(items, desc="tokenizing", unit=what.split()[-1][:-1] if what.endswith("s") else what,
                total=total, disable=None, mininterval=2.0, file=sys.stderr)


def pack(texts, tokenizer, block_size: int, max_texts: int = 0, workers: int = 1) -> Packed:
    """Tokenize `texts`, join with EOS, cut into blocks of `block_size`, in memory (the cache is written by
    `write_blocks` without holding the corpus; this reads its result back, for small corpora and tests)."""
    import tempfile

    from langgraft.train.tokenize import write_blocks

    with tempfile.TemporaryDirectory() as tmp:
        done = write_blocks(texts, tokenizer, block_size, Path(tmp) / "blocks.npy", max_texts=max_texts,
                            workers=workers)
        blocks = torch.from_numpy(np.load(Path(tmp) / "blocks.npy").astype(np.int64))
    return Packed(blocks, done.texts, done.tokens, done.chars)


def replay_pick(n_main: int, n_replay: int, fraction: float, seed: int) -> torch.Tensor:
    """Rows of the replay blocks to add so they make up `fraction` of the training blocks (sampled without
    replacement when there are enough)."""
    if fraction <= 0 or n_replay == 0:
        return torch.empty(0, dtype=torch.long)
    want = round(n_main * fraction / (1.0 - fraction))
    gen = torch.Generator().manual_seed(seed + 7)
    if want <= n_replay:
        return torch.randperm(n_replay, generator=gen)[:want]
    return torch.randint(n_replay, (want,), generator=gen)


def batch_indices(n_blocks: int, step: int, micro: int, *, accum: int, world: int, rank: int, seed: int,
                  steps_per_epoch: int) -> list[torch.Tensor]:
    """Block indices of each micro-batch of optimizer step `step` on `rank`: a function of the step only."""
    epoch, within = divmod(step, steps_per_epoch)
    perm = _epoch_order(n_blocks, seed, epoch)
    base = within * micro * accum * world
    out = []
    for m in range(accum):
        start = base + (m * world + rank) * micro
        out.append(perm[start:start + micro])
    return out


@functools.lru_cache(maxsize=1)
def _epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's block order, drawn once: drawing it again every step allocated 8 bytes a block per step (8 MB
    at 500M tokens), and the allocator kept some of each, which grew a rank's memory with the corpus."""
    return torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def build_data(stage: str, cfg: TrainConfig, tokenizer, accelerator, out: Path, *, fresh: bool = False):
    """Packed train/validation blocks (`Blocks`, memory-mapped), tokenized once per run: rank 0 writes the
    `packed-data/` cache (with `data.workers` tokenizing processes), other ranks and a `--resume` map it instead of
    re-tokenizing the corpus; its key covers the dataset files and the tokenizer, so a dataset rebuilt in place is
    re-tokenized. `fresh`: tokenize again whatever the cache holds (a resume whose checkpoint does not match the
    cache's blocks)."""
    from langgraft.rundir import atomic_dir

    cache = out / CACHE
    key = _data_key(stage, cfg, tokenizer)
    with accelerator.main_process_first():
        if cache.exists() and not (fresh and accelerator.is_main_process):
            saved = _read_cache(cache)
            if saved is not None and saved[0] == key:
                return saved[1:]
        if not accelerator.is_main_process:  # the main process's cache did not fit this rank: its own blocks
            return _own_blocks(stage, cfg, tokenizer)
        with atomic_dir(cache) as tmp:  # a kill mid-write leaves the previous cache (or none), never half of one
            summary, chars_per_token = _write_data(stage, cfg, tokenizer, tmp)
            (tmp / "cache.json").write_text(json.dumps({"key": key, "summary": summary,
                                                        "chars_per_token": chars_per_token}))
    saved = _read_cache(cache)
    if saved is None:
        raise UserError(f"{cache}: the packed data just written cannot be read back")
    return saved[1:]


def _own_blocks(stage: str, cfg: TrainConfig, tokenizer):
    """The blocks tokenized by this rank into a temporary folder and read into its RAM (the rare rank whose
    cache key differs from the main process's)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        summary, chars_per_token = _write_data(stage, cfg, tokenizer, Path(tmp))
        blocks = torch.from_numpy(np.load(Path(tmp) / "train.npy").astype(np.int64))
        val = None
        if chars_per_token is not None:
            val = (torch.from_numpy(np.load(Path(tmp) / "validation.npy").astype(np.int64)), chars_per_token)
    return blocks, val, summary


def data_digest(blocks, val) -> str:
    """sha256 of the token ids trained and validated on (as int32, the cache's own width): a checkpoint records
    it, so a resume notices a cache whose bytes changed since, even when the file still loads."""
    digest = hashlib.sha256()
    for ids in (blocks, val[0] if val else None):
        if isinstance(ids, Blocks):
            _hash_file_bytes(digest, ids.array)
        elif ids is not None:
            digest.update(ids.to(torch.int32).contiguous().numpy())
    digest.update(json.dumps(val[1] if val else None, default=str).encode())
    return digest.hexdigest()


def _hash_file_bytes(digest, array: np.memmap, chunk: int = 1 << 22) -> None:
    """Hash a memory-mapped array's bytes by reading its file, not its mapping: reading every page through the
    mapping would make them all resident in this process, the RAM the mapping exists to save."""
    left = array.nbytes
    with open(array.filename, "rb") as fh:
        fh.seek(array.offset)
        while left > 0:
            part = fh.read(min(chunk, left))
            if not part:
                raise OSError(f"{array.filename}: shorter than its header says")
            digest.update(part)
            left -= len(part)


def _save_ids(path: Path, ids: torch.Tensor) -> None:
    if ids.numel() and (int(ids.max()) >= 2**31 or int(ids.min()) < -(2**31)):
        raise UserError(f"{path}: token ids beyond int32 (vocabulary of 2^31 or more); not supported")
    np.save(path, ids.numpy().astype("<i4"), allow_pickle=False)


def _read_cache(path: Path):
    """(key, train Blocks, (validation Blocks, chars per token) or None, summary) from the cache folder, arrays
    memory-mapped and never unpickled; a cache that cannot be read so is rebuilt (None)."""
    try:
        meta = json.loads((path / "cache.json").read_text(encoding="utf-8"))
        train = _map_ids(path / "train.npy")
        val = None
        if meta["chars_per_token"] is not None:
            val = (_map_ids(path / "validation.npy"), float(meta["chars_per_token"]))
        return str(meta["key"]), train, val, dict(meta["summary"])
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with a cache, rebuilding it is the answer
        print(f"langgraft train: {path} cannot be read safely ({type(exc).__name__}); tokenizing again",
              file=sys.stderr, flush=True)
        return None


def _map_ids(path: Path) -> Blocks:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(array, np.memmap) or array.dtype != np.dtype("<i4") or array.ndim < 2:
        raise ValueError(f"{path.name}: not a memory-mapped int32 array of blocks")
    return Blocks(array)


def _data_key(stage: str, cfg: TrainConfig, tokenizer) -> str:
    from langgraft.rundir import sha256_path

    d = cfg.data
    tok_file = Path(cfg.model) / "tokenizer.json"
    # "positions": instruction rows carry position ids (rows cached without them are rebuilt)
    parts = [stage == "instruct" and "positions", sha256_path(Path(d.dataset) / DATASET_JSON), d.block_size,
             d.max_texts, d.replay_fraction, cfg.seed,
             sha256_path(Path(d.replay) / DATASET_JSON) if d.replay else None, len(tokenizer),
             sha256_path(tok_file) if tok_file.is_file() else None]
    if d.cover_new_tokens:  # only then, so caches written before the setting existed keep their keys
        parts.append(("cover_new_tokens", d.cover_new_tokens, sha256_path(Path(cfg.model) / NEW_TOKENS)))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _write_data(stage: str, cfg: TrainConfig, tokenizer, folder: Path):
    """Write `folder`/train.npy (and validation.npy); (summary, chars per token of the validation split or None)."""
    if stage != "instruct":
        return _pack_data(cfg, tokenizer, folder)
    blocks, val, summary = _pack_instructions(cfg, tokenizer)
    _save_ids(folder / "train.npy", blocks)
    if val:
        _save_ids(folder / "validation.npy", val[0])
    return summary, val[1] if val else None


def _pack_data(cfg: TrainConfig, tokenizer, folder: Path):
    """Tokenize the training (and replay, validation) texts into `folder`'s int32 block files."""
    from langgraft.train.tokenize import append_rows, write_blocks

    d = cfg.data
    main = write_blocks(iter_texts(d.dataset, "train"), tokenizer, d.block_size, folder / "train.npy",
                        max_texts=d.max_texts, workers=d.workers)
    summary = {"train_texts": main.texts, "train_tokens": main.tokens, "train_chars": main.chars,
               "train_blocks": main.blocks, "packing_efficiency": round(main.efficiency, 4)}
    if d.cover_new_tokens:
        summary.update(keep_covering_blocks(folder / "train.npy", d.cover_new_tokens, cfg.model))
    if d.replay_fraction:
        replay = write_blocks(iter_texts(d.replay, "train"), tokenizer, d.block_size, folder / "replay.npy",
                              max_texts=d.max_texts, workers=d.workers)
        pick = replay_pick(main.blocks, replay.blocks, d.replay_fraction, cfg.seed).numpy()
        total = append_rows(folder / "train.npy", np.load(folder / "replay.npy", mmap_mode="r"), pick)
        (folder / "replay.npy").unlink()
        summary["replay_blocks"] = total - main.blocks
    chars_per_token = None
    if has_split(d.dataset, "validation"):
        val = write_blocks(iter_texts(d.dataset, "validation"), tokenizer, d.block_size,
                           folder / "validation.npy", workers=d.workers)
        if val.blocks:
            chars_per_token = val.chars / max(val.tokens, 1)
            summary["validation_blocks"] = val.blocks
        else:
            (folder / "validation.npy").unlink()
    return summary, chars_per_token


def _pack_instructions(cfg: TrainConfig, tokenizer):
    """Labelled instruction rows (prompt tokens not trained); skipped examples are counted by reason."""
    from langgraft.train.instruct import pack_examples

    d = cfg.data
    # whole records: the instruction fields and, where the dataset has them, the chat `messages`
    main = pack_examples(tokenizing(SplitTexts(d.dataset, "train", rows=True), "instruction examples", d.block_size,
                                    d.max_texts), tokenizer, d.block_size, d.max_texts)
    summary = {"train_examples": main.examples, "train_rows": int(main.rows.shape[0]),
               "train_response_tokens": main.response_tokens, "packing_efficiency": round(main.efficiency, 4),
               "skipped": main.skipped}
    if main.skipped:
        print(f"langgraft train: skipped instruction examples: "
              f"{', '.join(f'{k} {v}' for k, v in sorted(main.skipped.items()))}", flush=True)
    val = None
    if has_split(d.dataset, "validation"):
        packed = pack_examples(tokenizing(SplitTexts(d.dataset, "validation", rows=True), "instruction examples",
                                          d.block_size), tokenizer, d.block_size)
        if packed.rows.shape[0]:
            # bits per character of the responses: the only tokens the loss counts
            val = (packed.rows, packed.response_chars / max(packed.response_tokens, 1))
            summary["validation_rows"] = int(packed.rows.shape[0])
    return main.rows, val, summary
