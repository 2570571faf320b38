"""Training blocks chosen to touch as many new tokens as a small budget can (`data.cover_new_tokens`).

A warm-up of the new rows (transformer frozen) on a few dozen steps of text learns only the rows whose tokens occur
in that text. Blocks taken in corpus order repeat the common new tokens and leave most rare ones untouched; the
blocks that together hold the most distinct new token ids reach more rows with the same tokens. Choosing k of
n blocks to hold the most distinct ids is maximum coverage, which greedy picking approximates within 1 - 1/e of
the best; lazy greedy (a block's gain only falls as others are picked) keeps it near one pass. Written here
because no library in the dependency set picks rows by coverage; the state is each block's distinct new ids (a
few hundred int32 per block), read from the memory-mapped cache in chunks.
"""

from __future__ import annotations

import heapq
import sys
from pathlib import Path

import numpy as np

from langgraft.errors import UserError
from langgraft.formats.new_tokens import NAME as NEW_TOKENS, read_new_tokens


def covering_blocks(blocks: np.ndarray, k: int, first_new: int, chunk: int = 4096) -> tuple[np.ndarray, int, int]:
    """Indices (sorted) of at most `k` rows of `blocks` that hold the most distinct ids >= `first_new`, picked
    greedily; with the number of distinct new ids they hold and the number the whole array holds."""
    sets: list[np.ndarray] = []
    for start in range(0, len(blocks), chunk):
        rows = np.asarray(blocks[start:start + chunk])
        sets += [np.unique(row[row >= first_new]) for row in rows]
    every = np.unique(np.concatenate(sets)) if sets else np.empty(0, dtype=np.int64)
    held = np.zeros(int(every.max()) + 1 if len(every) else 0, dtype=bool)
    heap = [(-len(s), i) for i, s in enumerate(sets)]
    heapq.heapify(heap)
    picked: list[int] = []
    while heap and len(picked) < k:
        neg, i = heapq.heappop(heap)
        gain = int((~held[sets[i]]).sum())
        if gain == -neg:  # still the best block: every other gain is at most its stale value
            picked.append(i)
            held[sets[i]] = True
        else:
            heapq.heappush(heap, (-gain, i))
    return np.array(sorted(picked), dtype=np.int64), int(held.sum()), len(every)


def check_cover(k: int, stage: str, model_dir: str, replay_fraction: float) -> None:
    """One line for a `data.cover_new_tokens` the run cannot honour, before any data is read."""
    if not k:
        return
    if stage == "instruct" or replay_fraction:
        raise UserError("data.cover_new_tokens: chooses blocks of plain text for --stage align or pretrain, "
                        "without replay data")
    if not (Path(model_dir) / NEW_TOKENS).is_file():
        raise UserError(f"data.cover_new_tokens: {model_dir} has no {NEW_TOKENS} (the list `langgraft extend` writes); "
                        "blocks can be chosen by new-token coverage only on an extended model")


def keep_covering_blocks(path: Path, k: int, model_dir: str) -> dict:
    """Rewrite the blocks file `path` to the `k` covering blocks for `model_dir`'s new tokens; the summary's
    entries (blocks kept, distinct new tokens they hold, distinct new tokens in all blocks, new tokens in all)."""
    new = read_new_tokens(model_dir)
    blocks = np.load(path, mmap_mode="r", allow_pickle=False)
    n = len(blocks)
    pick, held, present = covering_blocks(blocks, k, new["base_vocab_size"])
    kept = np.ascontiguousarray(blocks[pick], dtype="<i4")
    del blocks
    tmp = path.with_name(path.stem + ".cover.npy")
    np.save(tmp, kept, allow_pickle=False)
    tmp.replace(path)
    print(f"langgraft train: data.cover_new_tokens kept {len(pick):,} of {n:,} "
          f"blocks, holding {held:,} of the {present:,} distinct new tokens in the data ({len(new['tokens']):,} new "
          "tokens in the vocabulary)", file=sys.stderr, flush=True)
    return {"cover_blocks": len(pick), "cover_new_tokens_held": held, "cover_new_tokens_in_data": present,
            "new_tokens": len(new["tokens"])}
