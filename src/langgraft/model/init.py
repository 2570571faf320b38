"""Initialisation of new embedding / head rows after a vocabulary extension: one function per method.

Every function edits `weight` (a [rows, dim] matrix whose first `base_vocab_size` rows are the base model's) in
place, touches only the rows it is given, and computes in float32 so bf16 checkpoints do not lose precision in
the averages. Old rows are never written, which is what keeps surgery an identity on old tokens.

`shrunk-subtokens` is mean-subtokens pulled a quarter of the way back to the mean of all old rows.
Why: the mean of a new token's piece rows gives it, as a head row, the average of its pieces' logits — roughly a
geometric mean of their probabilities — and new tokens sharing frequent pieces (the word-boundary space, common
letters) all get high logits at once, so mean-subtokens spreads probability too evenly over look-alike new tokens.
Pulling toward the global mean lowers every new logit toward the average old logit in proportion to how far it
sits above it (a temperature on the new tokens' logits), and it is one linear map of the row, so it works where
the input and head rows are one matrix (tied) as well as untied. The same row serves as input embedding: a
shrunk mean of the pieces is still the pieces' meaning, closer to the centre of the embedding cloud.
Measured at step 0 on SmolLM2-135M-Instruct + 17,401 Persian tokens (`python bench/init_methods.py --model
DIR`, docs/BENCHMARKS.md), Persian bpc as a multiple of the base's on its own tokens: the factor 0.75 was chosen on
held-out Fars news + RTE (grid 0.6-0.95: 0.939x, mean-subtokens 0.988x; a length-dependent factor, a constant logit
offset and first-piece head rows were worse), then confirmed on NTREX, which no langgraft stage trains on: 1.063x
vs 1.113x, English 1.0003x vs 1.0005x, tied and untied alike. What remains on NTREX is mostly the input side: after
a whole-word new token the model still expects the word to go on (it reads the pieces' mean as a word fragment) and
bets on single Arabic-script letters and bytes, old rows that surgery must not touch.
It is not the default: after a short align (new rows only, AdamW 1e-3) mean-subtokens overtakes it and the gap
grows (NTREX 0.920x vs 0.934x after 8 steps, 0.865x vs 0.896x after 24), and every recipe aligns. Use it where
step-0 quality matters (a model used straight after `extend`).

No rule here removes the step-0 cost on every text, and none can by being cleverer about the base's rows alone:
what the rows lack is the domain. Rows fitted by gradient descent, transformer and old rows frozen
(`bench/rows_bound.py`), take the main line's held-out health articles from 1.40x the base's bpc to 0.99x after 16
steps on other articles of that site, tied, English unchanged; fitted as long on news they reach 0.87x on news
sentences but stay at 1.11x on the articles. That fit is the align stage, which every recipe runs next.
"""

from __future__ import annotations

import torch

from langgraft.model.options import INIT_METHODS, ExtendOptions

METHODS = INIT_METHODS
DEFAULT = ExtendOptions.init
SHRINK = 0.75  # chosen on held-out Fars news + RTE, confirmed on NTREX (module docstring)


def _subtoken_means(weight: torch.Tensor, tokens: list[dict], base_vocab_size: int):
    """(ids, float32 means of their base pieces' rows, ids without usable base pieces)."""
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
    means = old.new_zeros(0, old.shape[1])
    if targets:
        # embedding_bag(mode="mean") averages variable-length id lists in one vectorised call.
        means = torch.nn.functional.embedding_bag(
            torch.tensor(flat, dtype=torch.long), old, torch.tensor(offsets, dtype=torch.long), mode="mean"
        )
    return targets, means, fallback


@torch.no_grad()
def init_mean_subtokens(weight: torch.Tensor, tokens: list[dict], base_vocab_size: int) -> int:
    """Row of each new token = mean of the rows of the base pieces its surface splits into (`base_ids`).

    `tokens` are `new_tokens.json` entries (`id`, `base_ids`); the tokenizer-extension step already decoded
    byte-level tokens to text before splitting them with the base tokenizer. A token without usable base ids
    falls back to the mean of all old rows. Returns how many tokens fell back.
    """
    return init_shrunk_subtokens(weight, tokens, base_vocab_size, shrink=1.0)


@torch.no_grad()
def init_shrunk_subtokens(weight: torch.Tensor, tokens: list[dict], base_vocab_size: int, *,
                          shrink: float = SHRINK) -> int:
    """Row = global mean + `shrink` × (mean of the token's base pieces' rows − global mean).

    For a head row this makes every new token's logit the interpolation `shrink` of the way from the average old
    logit to the average of its pieces' logits, in every context: `shrink = 1` is mean-subtokens, 0 is `mean`.
    Tokens without usable base ids get the global mean. Returns how many tokens fell back to it.
    """
    targets, means, fallback = _subtoken_means(weight, tokens, base_vocab_size)
    center = weight[:base_vocab_size].float().mean(dim=0)
    if targets:
        rows = means if shrink == 1.0 else center + shrink * (means - center)
        weight[torch.tensor(targets)] = rows.to(weight.dtype)
    if fallback:
        weight[torch.tensor(fallback)] = center.to(weight.dtype).expand(len(fallback), -1)
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
    """Apply `method` to the rows of `tokens`; returns the number of mean-fallbacks (the subtoken methods only)."""
    ids = [t["id"] for t in tokens]
    if method == "shrunk-subtokens":
        return init_shrunk_subtokens(weight, tokens, base_vocab_size)
    if method == "mean-subtokens":
        return init_mean_subtokens(weight, tokens, base_vocab_size)
    if method == "mean":
        init_mean(weight, ids, base_vocab_size)
    elif method == "random":
        init_random(weight, ids, std, seed)
    else:
        raise ValueError(f"unknown init method {method!r}")
    return 0
