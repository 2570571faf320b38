"""Tokenize documents straight into the packed-data cache: each document's ids, then EOS, appended to an int32 `.npy`
file chunk by chunk, so the tokenizing process never holds the corpus (a Python list of a 2 GB corpus's token ids
was ~20 GB). The file is written with a fixed-size header, and when the stream ends the tail shorter than one
block is cut off and the header rewritten with the block count: the stream is the blocks, no copy.

With `workers` > 1 the chunks are tokenized by that many processes and written back in submission order. Chunks
are cut by document count, never by worker count, and each is one tokenizer batch either way, so any number of
workers writes the same bytes as one.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langgraft.errors import UserError

CHUNK = 256  # documents per chunk: one tokenizer batch, one unit of work for a worker
HEADER = 128  # bytes of the .npy header (a multiple of 64, as the format asks), room for any 2-D int32 shape
_MAGIC = b"\x93NUMPY\x01\x00"


@dataclass
class Written:
    texts: int  # documents read (empty ones skipped)
    tokens: int  # tokens produced (documents + EOS)
    chars: int  # characters of the documents (for bits per character)
    blocks: int  # whole blocks kept (the tail shorter than a block is dropped)
    block_size: int

    @property
    def efficiency(self) -> float:
        return self.blocks * self.block_size / max(self.tokens, 1)


def write_blocks(texts, tokenizer, block_size: int, path: Path, *, max_texts: int = 0, workers: int = 1,
                 chunk: int = CHUNK) -> Written:
    """Tokenize `texts` (an iterable of strings), join with EOS, write `path` as int32 blocks of `block_size`."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("tokenizer has no eos_token; packing needs one to separate documents")
    if len(tokenizer) >= 2**31:
        raise UserError(f"{path}: token ids beyond int32 (vocabulary of 2^31 or more); not supported")
    counts = [0, 0]  # documents, characters: counted as the chunks are read
    tokens = 0
    with Path(path).open("wb") as fh:
        fh.write(b"\0" * HEADER)
        for ids in _encoded(_chunks(texts, counts, block_size, max_texts, chunk), tokenizer, eos, workers):
            fh.write(ids.tobytes())
            tokens += ids.size
        n_blocks = tokens // block_size
        _finish(fh, n_blocks, block_size)
    return Written(counts[0], tokens, counts[1], n_blocks, block_size)


def append_rows(path: Path, source: np.ndarray, pick: np.ndarray, rows_at_once: int = 4096) -> int:
    """Append `source[pick]` (rows of the same width) to the blocks file `path`; its new row count."""
    have = np.load(path, mmap_mode="r", allow_pickle=False)
    n_rows, width = have.shape
    del have
    with Path(path).open("r+b") as fh:
        fh.seek(HEADER + n_rows * width * 4)
        for start in range(0, len(pick), rows_at_once):
            fh.write(np.ascontiguousarray(source[pick[start:start + rows_at_once]], dtype="<i4").tobytes())
        n_rows += len(pick)
        _finish(fh, n_rows, width)
    return n_rows


def encode(tokenizer, eos: int, texts: list[str]) -> np.ndarray:
    """One chunk's token stream: every text's ids followed by EOS, as int32."""
    out: list[int] = []
    for ids in _batch_ids(tokenizer, texts):
        out.extend(ids)
        out.append(eos)
    return np.asarray(out, dtype="<i4")


def _batch_ids(tokenizer, texts: list[str]):
    """Each text's ids without special tokens. A fast tokenizer's backend encodes the batch without character
    offsets (`encode_batch_fast`: the same ids, less work per token) when nothing can make the wrapper's call
    differ: the stock wrapper class (no subclass re-implementing encoding), no truncation or padding left on the
    backend (a plain call switches both off) and the wrapper's special-token splitting already set on it."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = getattr(tokenizer, "backend_tokenizer", None)
    kind = type(tokenizer)
    stock = (isinstance(tokenizer, TokenizersBackend) and kind._encode_plus is TokenizersBackend._encode_plus
             and kind.__call__ is TokenizersBackend.__call__)
    if (not stock or not hasattr(backend, "encode_batch_fast") or backend.truncation or backend.padding
            or backend.encode_special_tokens != bool(tokenizer.split_special_tokens)):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return (e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False))


def _finish(fh, n_rows: int, width: int) -> None:
    """Drop what lies past `n_rows` whole rows and write the header that says so."""
    fh.truncate(HEADER + n_rows * width * 4)
    fh.seek(0)
    fh.write(_header(n_rows, width))


def _header(n_rows: int, width: int) -> bytes:
    text = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (n_rows, width)
    body = text.ljust(HEADER - len(_MAGIC) - 2 - 1) + "\n"
    return _MAGIC + struct.pack("<H", len(body)) + body.encode("latin1")


def _chunks(texts, counts: list[int], block_size: int, max_texts: int, chunk: int):
    """Lists of `chunk` non-empty texts (at most `max_texts` in all), counting documents and characters."""
    from langgraft.train.data import tokenizing

    pending: list[str] = []
    for text in tokenizing(texts, "documents", block_size, max_texts):
        if max_texts and counts[0] >= max_texts:
            break
        if not text:
            continue
        counts[0] += 1
        counts[1] += len(text)
        pending.append(text)
        if len(pending) >= chunk:
            yield pending
            pending = []
    if pending:
        yield pending


def _encoded(chunks, tokenizer, eos: int, workers: int):
    """Each chunk's token stream, in order; tokenized here (1 worker) or in `workers` processes."""
    if workers <= 1:
        for texts in chunks:
            yield encode(tokenizer, eos, texts)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold torch/tokenizer thread pools and a process group, unsafe to fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(tokenizer, eos)) as pool:
        pending: deque = deque()
        for texts in chunks:
            pending.append(pool.submit(_encode_here, texts))
            # a bounded window: reading runs at most two chunks a worker ahead, so memory stays flat
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_WORKER: dict = {}


def _start_worker(tokenizer, eos: int) -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism
    _WORKER.update(tokenizer=tokenizer, eos=eos)


def _encode_here(texts: list[str]) -> np.ndarray:
    return encode(_WORKER["tokenizer"], _WORKER["eos"], texts)
