"""Fused output head + cross-entropy that never materialises the full [tokens, vocab] logits.

Why hand-written: the usual path (`model(labels=...)`) keeps bf16 logits, their float32 copy and the softmax for
the whole batch (gigabytes at vocab 50k), and when the head is trained through PEFT `trainable_token_indices` it
still computes the full [vocab, dim] weight gradient because the merged weight is built with `index_copy`. Here
the head weight is frozen except for the trained rows `idx` (their current values `delta`), and the gradient is
computed chunk by chunk inside the forward pass (as Liger-Kernel's fused linear cross-entropy does on GPUs):
logits, softmax and dlogits live for one chunk only, and only the trained rows get a weight gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Head(NamedTuple):
    """The output head as the loss reads it: the frozen weight [vocab, dim], the ids of its trained rows, the same
    ids as a slice when they are one run (else None), how many tokens one chunk holds, and a dict the caller keeps
    across calls to hold the merged weight (None: built afresh at every call)."""

    weight: torch.Tensor
    idx: torch.Tensor
    rows: slice | None
    chunk: int
    cache: dict | None = None


def merged_weight(head: Head, delta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The head weight with rows `idx` replaced by `delta`, in `dtype`. With a cache, the frozen rows are cast once
    and kept (they never change: PEFT's merge and unmerge write only the trained rows), and each call copies in only
    the trained rows; building the whole matrix afresh cost ~0.2 s a call at 66,688 × 576 on the 2-core CPU, i.e.
    a fixed cost per micro-batch that made small micro-batches slow."""
    weight, idx, rows = head.weight.detach(), head.idx, head.rows
    if head.cache is None:
        return weight.index_copy(0, idx, delta.detach().to(weight.dtype)).to(dtype)
    if not idx.numel() and weight.dtype == dtype:
        return weight
    key = (tuple(weight.shape), dtype, weight.device)
    buf = head.cache.get(key)
    if buf is None:
        head.cache.clear()
        buf = head.cache[key] = weight.to(dtype, copy=True)
    if isinstance(rows, slice):
        buf[rows].copy_(delta.detach())
    elif idx.numel():
        buf.index_copy_(0, idx, delta.detach().to(dtype))
    return buf


class FusedHeadCE(torch.autograd.Function):
    """loss = mean CE(h @ W_eff.T, labels) with W_eff = the head weight with rows `idx` replaced by `delta`."""

    @staticmethod
    def forward(ctx, h, delta, labels, head: Head):  # positional: Function.apply takes no keywords
        idx, rows, chunk = head.idx, head.rows, head.chunk
        # One cast of the merged weight to the autocast dtype up front, not one per chunk and matmul.
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
        w_eff = merged_weight(head, delta, dtype)
        flat_h = h.detach().reshape(-1, h.shape[-1])
        flat_y = labels.reshape(-1)
        n_valid = (flat_y != -100).sum().clamp(min=1)
        grad_h = torch.zeros_like(flat_h) if h.requires_grad else None
        grad_delta = torch.zeros(delta.shape, dtype=torch.float32, device=delta.device) \
            if delta.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, flat_h.shape[0], chunk):
                hc, yc = flat_h[start:start + chunk].to(dtype), flat_y[start:start + chunk]
                valid = (yc != -100).float()
                ar, safe_y = torch.arange(len(yc), device=hc.device), yc.clamp(min=0)
                # The chunk's logits are the big buffer (chunk × vocab floats) and every pass over it is memory
                # bound, so the softmax is built in place in as few passes as possible: max, sub+exp, sum, scale.
                probs = (hc @ w_eff.t()).float()
                target = probs[ar, safe_y]
                peak = probs.amax(dim=1, keepdim=True)
                probs.sub_(peak).exp_()
                norm = probs.sum(dim=1, keepdim=True)
                total += ((peak.squeeze(1) + norm.squeeze(1).log() - target) * valid).sum()
                if grad_h is None and grad_delta is None:
                    continue
                # dlogits = softmax - onehot on valid positions, 0 on ignored ones (their scale is 0)
                probs.mul_(valid[:, None] / norm)
                probs[ar, safe_y] -= valid
                g = probs.to(dtype)
                if grad_h is not None:
                    grad_h[start:start + chunk] = (g @ w_eff).to(grad_h.dtype)
                if grad_delta is not None:
                    # a slice when the trained ids are one run (rows=new, rows=all): a view, not a column gather
                    g_rows = g[:, rows] if isinstance(rows, slice) else g[:, idx]
                    grad_delta += (g_rows.t() @ hc).float()
        ctx.save_for_backward(grad_h if grad_h is not None else torch.empty(0),
                              grad_delta if grad_delta is not None else torch.empty(0), n_valid)
        ctx.h_shape, ctx.delta_dtype = h.shape, delta.dtype
        ctx.has = (grad_h is not None, grad_delta is not None)
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_delta, n_valid = ctx.saved_tensors
        scale = grad_out / n_valid
        gh = (grad_h * scale.to(grad_h.dtype)).reshape(ctx.h_shape) if ctx.has[0] else None
        gd = (grad_delta * scale).to(ctx.delta_dtype) if ctx.has[1] else None
        return gh, gd, None, None


def as_slice(ids: list[int]) -> slice | None:
    """`ids` as a slice when they are one increasing run (new rows are appended, so they usually are)."""
    if ids and all(b == a + 1 for a, b in zip(ids, ids[1:])):
        return slice(ids[0], ids[-1] + 1)
    return None


def auto_chunk(device: torch.device, vocab: int) -> int:
    """Tokens per chunk. CPU: the chunk's float32 logits fit ~32 MiB, a last-level cache, since the softmax passes
    are memory bound (hidden 256, vocab 49.7k, 1 thread: 2048 → 927 tok/s, 128 → 1,066); GPU: 4096, big enough
    to keep the matmuls efficient while bounding memory (4096 × 128k floats = 2 GiB)."""
    if device.type == "cpu":
        return max(64, (8 << 20) // vocab)
    return 4096


def fused_head_ce(h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor,
                  labels: torch.Tensor, *, chunk: int = 0, rows: slice | None | str = "auto",
                  cache: dict | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of hidden states `h` [.., dim] against `labels` [..] (-100 = ignore).
    `rows`: `as_slice` of the ids (a slice, or None when they are not one run); "auto" computes it here.
    `cache`: a dict kept across calls on the same head (`merged_weight`)."""
    if rows == "auto":
        rows = as_slice(idx.tolist())
    head = Head(weight, idx, rows, chunk or auto_chunk(h.device, weight.shape[0]), cache)
    return FusedHeadCE.apply(h, delta, labels, head)


@torch.no_grad()
def head_ce_sum(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int = 0) -> tuple[float, int]:
    """(sum of per-token CE in nats, number of tokens) for evaluation, chunked like the training path."""
    chunk = chunk or auto_chunk(h.device, weight.shape[0])
    flat_h, flat_y = h.reshape(-1, h.shape[-1]), labels.reshape(-1)
    total, count = 0.0, 0
    for start in range(0, flat_h.shape[0], chunk):
        logits = (flat_h[start:start + chunk] @ weight.t().to(flat_h.dtype)).float()
        y = flat_y[start:start + chunk]
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((y != -100).sum())
    return total, count
