"""Initialisation of new embedding / head rows after a vocabulary extension: one function per method.

Every function edits `weight` (a [rows, dim] matrix whose first `base_vocab_size` rows are the base model's) in
place, touches only the rows it is given, and computes in float32 so bf16 checkpoints do not lose precision in
the averages. Old rows are never written, which is what keeps surgery an identity on old tokens.
"""

from __future__ import annotations

import torch

METHODS = ("mean-subtokens", "mean", "random")


@torch.no_grad()
def init_mean_subtokens(weight: torch.Tensor, tokens: list[dict], base_vocab_size: int) -> int:
    """Row of each new token = mean of the rows of the base pieces its surface splits into (`base_ids`).

    `tokens` are `new_tokens.json` entries (`id`, `base_ids`); the tokenizer-extension step already decoded
    byte-level tokens to text before splitting them with the base tokenizer. A token without usable base ids
    falls back to the mean of all old rows. Returns how many tokens fell back.
    """
    old = weight[:base_vocab_size].float()
    flat: list[int] = []
    offsets: list[int] = []
    targets: list[int] = []
    fallback: list[int] = []
    for tok in tokens:
        ids = [i for i in tok.get("base_ids", []) if 0 <= i < base_vocab_size]
        if not ids:
            fallback.append(tok["id"])
            continue
        targets.append(tok["id"])
        offsets.append(len(flat))
        flat.extend(ids)
    if targets:
        # embedding_bag(mode="mean") averages variable-length id lists in one vectorised call.
        means = torch.nn.functional.embedding_bag(
            torch.tensor(flat, dtype=torch.long), old, torch.tensor(offsets, dtype=torch.long), mode="mean"
        )
        weight[torch.tensor(targets)] = means.to(weight.dtype)
    if fallback:
        init_mean(weight, fallback, base_vocab_size)
    return len(fallback)


@torch.no_grad()
def init_mean(weight: torch.Tensor, ids: list[int], base_vocab_size: int) -> None:
    """Rows `ids` = mean of all old rows (for a head row: its logit is the average old logit, never the max)."""
    if not ids:
        return
    mean = weight[:base_vocab_size].float().mean(dim=0)
    weight[torch.tensor(ids)] = mean.to(weight.dtype).expand(len(ids), -1)


@torch.no_grad()
def init_random(weight: torch.Tensor, ids: list[int], std: float, seed: int = 0) -> None:
    """Rows `ids` ~ N(0, std²), the model's own initialiser (`initializer_range`), seeded for reproducibility."""
    if not ids:
        return
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(ids), weight.shape[1], generator=gen, dtype=torch.float32) * std
    weight[torch.tensor(ids)] = rows.to(weight.dtype)


def init_rows(weight: torch.Tensor, method: str, tokens: list[dict], base_vocab_size: int, *,
              std: float, seed: int = 0) -> int:
    """Apply `method` to the rows of `tokens`; returns the number of mean-fallbacks (mean-subtokens only)."""
    ids = [t["id"] for t in tokens]
    if method == "mean-subtokens":
        return init_mean_subtokens(weight, tokens, base_vocab_size)
    if method == "mean":
        init_mean(weight, ids, base_vocab_size)
    elif method == "random":
        init_random(weight, ids, std, seed)
    else:
        raise ValueError(f"unknown init method {method!r}")
    return 0
