"""Training data: read a prepared dataset, tokenize, pack into fixed blocks, and order batches by step.

Packing concatenates documents, each followed by EOS, and cuts the stream into `block_size` blocks: no padding,
so every position is a training token; only the tail shorter than one block is dropped (reported as packing
efficiency). Batch order is a pure function of (seed, step), which is what makes `--resume` exact: the data
position is the step counter, nothing else needs saving.

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

from dataclasses import dataclass
from pathlib import Path

import torch

from langgraft.errors import UserError


@dataclass
class Packed:
    blocks: torch.Tensor  # [n_blocks, block_size] token ids
    texts: int  # documents read
    tokens: int  # tokens produced (documents + EOS)
    chars: int  # characters of the documents (for bits per character)

    @property
    def efficiency(self) -> float:
        return self.blocks.numel() / max(self.tokens, 1)


class SplitTexts:
    """The texts (or with `rows`, the whole records) of one split of a `langgraft data prepare` dataset (the corpus
    package owns the format), streamed; sized from dataset.json, so tokenizing can say how many documents it has
    ahead and show a bar with an ETA."""

    def __init__(self, dataset_dir: str | Path, split: str, rows: bool = False):
        from langgraft.data.load import dataset_info

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
    from langgraft.data.load import dataset_info

    return bool(dataset_info(dataset_dir)["splits"].get(split, {}).get("files"))


def tokenizing(items, what: str, block_size: int, limit: int = 0):
    """`items`, with a line saying what is tokenized (how many, of which dataset split) and a bar: said before the
    first step, since a corpus of GBs tokenizes for minutes before the step bar appears."""
    import sys

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


def pack(texts, tokenizer, block_size: int, max_texts: int = 0, batch: int = 256) -> Packed:
    """Tokenize `texts`, join with EOS, cut into blocks of `block_size`."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("tokenizer has no eos_token; packing needs one to separate documents")
    stream: list[int] = []
    n_texts = n_chars = 0
    pending: list[str] = []

    def flush() -> None:
        for ids in tokenizer(pending, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
        pending.clear()

    for text in tokenizing(texts, "documents", block_size, max_texts):
        if max_texts and n_texts >= max_texts:
            break
        if not text:
            continue
        n_texts += 1
        n_chars += len(text)
        pending.append(text)
        if len(pending) >= batch:
            flush()
    flush()
    n_blocks = len(stream) // block_size
    blocks = torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
    return Packed(blocks, n_texts, len(stream), n_chars)


def mix_replay(main: torch.Tensor, replay: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Add replay blocks so they make up `fraction` of the result (sampled without replacement when possible)."""
    if fraction <= 0 or replay.shape[0] == 0:
        return main
    want = round(main.shape[0] * fraction / (1.0 - fraction))
    gen = torch.Generator().manual_seed(seed + 7)
    if want <= replay.shape[0]:
        pick = torch.randperm(replay.shape[0], generator=gen)[:want]
    else:
        pick = torch.randint(replay.shape[0], (want,), generator=gen)
    return torch.cat([main, replay[pick]])


def batch_indices(n_blocks: int, step: int, micro: int, *, accum: int, world: int, rank: int, seed: int,
                  steps_per_epoch: int) -> list[torch.Tensor]:
    """Block indices of each micro-batch of optimizer step `step` on `rank`: a function of the step only."""
    epoch, within = divmod(step, steps_per_epoch)
    perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    base = within * micro * accum * world
    out = []
    for m in range(accum):
        start = base + (m * world + rank) * micro
        out.append(perm[start:start + micro])
    return out
