"""Peak memory of a training stage, estimated from the model's config.json and the stage's config before anything
loads, so a user learns before the run (and from `--show-config`) whether it fits their machine.

Why a formula rather than a probe step: a probe costs as much as a training step, needs the model loaded, and
the number is wanted before either. The terms follow what a step keeps alive:
- the weights as loaded (float32 on CPU, bf16 on a GPU with bf16), the frozen linear weights in bf16 under bf16
  autocast on CPU too (train/model.py casts them once rather than autocast at every forward pass);
- the trained parameters (LoRA matrices and the trained embedding/head rows) with their gradients and AdamW's two
  moments, plus PEFT's copy of the original rows and the merged head weight the loss keeps (train/loss.py);
- the activations autograd saves, per token and decoder layer (`ACT_PER_TOKEN`, in units of the hidden and
  intermediate sizes, measured on SmolLM2-135M on CPU with bf16 autocast and LoRA dropout), or with activation
  checkpointing one float32 layer input per token and layer plus one layer's activations;
- the fused head's chunk buffers and the runtime itself (Python, torch, transformers, and the heap a long run
  keeps: `RUNTIME_BYTES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from langgraft.errors import UserError

# Bytes a step holds per token per decoder layer: a × hidden + b × intermediate, with bf16 autocast and LoRA (with
# its bool-mask dropout) on all seven linear layers, glibc's free-but-resident heap included (SmolLM2-135M extended
# to 66,688 rows, pretrain, bench/train_memory.py: 4 × 512 tokens 5.0-5.6 GiB peak, 1 × 512 2.7 GiB). Align trains
# no LoRA, so its frozen linear layers save no inputs: ALIGN_SHARE of that (measured: 3.5 GiB). Float32 training
# (a CPU without native bf16) saves every activation in float32: FP32_ACT_FACTOR times as much (the same step on a
# 2-core AMD EPYC without bf16: 1,785 MiB more per 512 tokens, 1 × 512 3.48 GiB, 4 × 512 8.7-8.9 GiB).
ACT_PER_TOKEN = (72, 17)
ALIGN_SHARE = 0.58
FP32_ACT_FACTOR = 1.8
# With activation checkpointing: bytes per token per layer, as a multiple of the hidden size, kept between the
# forward and the backward pass (the float32 layer input and what the allocator holds around the recompute;
# measured on the same model and step: 2.6 GiB peak).
CKPT_PER_HIDDEN = 33
# The runtime: Python, torch, transformers, and what a run of hundreds of steps keeps beyond one step's tensors (the
# allocator's free-but-resident heap grows over a long run; in `langgraft run` the earlier stages' imports and
# caches too). Fitted on the whole bf16 SmolLM2 recipe in one process (align, pretrain, instruct peaks 2.27, 2.74,
# 3.25 GiB); fresh processes of a few steps peak 0.1-0.3 GiB lower, so there the estimate reads up to ~1.15x high.
RUNTIME_BYTES = 850 << 20


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool


def read_shape(model_dir: str | Path) -> Shape:
    """The sizes of a decoder-only model folder's config.json (a multimodal config's text part)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    text = cfg.get("text_config") or cfg
    hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
    return Shape(vocab=int(text["vocab_size"]), hidden=hidden,
                 intermediate=int(text.get("intermediate_size") or 4 * hidden),
                 layers=int(text["num_hidden_layers"]), heads=heads,
                 kv_heads=int(text.get("num_key_value_heads") or heads),
                 head_dim=int(text.get("head_dim") or hidden // heads),
                 tied=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))))


def linear_params(s: Shape) -> int:
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return s.layers * (s.hidden * (q + 2 * kv) + q * s.hidden + 3 * s.hidden * s.intermediate)


def lora_params(s: Shape, r: int, targets: list[str]) -> int:
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    dims = {"q_proj": (s.hidden, q), "k_proj": (s.hidden, kv), "v_proj": (s.hidden, kv), "o_proj": (q, s.hidden),
            "gate_proj": (s.hidden, s.intermediate), "up_proj": (s.hidden, s.intermediate),
            "down_proj": (s.intermediate, s.hidden)}
    names = list(dims) if targets == ["all-linear"] else targets
    return s.layers * sum(r * sum(dims[name]) for name in names if name in dims)


def estimate_peak(s: Shape, cfg, *, stage: str, rows: int, bf16: bool, gpu: bool = False) -> dict[str, int]:
    """Bytes by term (and "total") of one training process's peak for `stage` with `rows` trained rows."""
    matrices = 1 if s.tied else 2
    weight_bytes = 2 if gpu and bf16 else 4
    compute_bytes = 2 if bf16 else 4
    lora = lora_params(s, cfg.lora.r, cfg.lora.targets) if stage != "align" else 0
    trained = lora + matrices * rows * s.hidden
    tokens = cfg.micro_batch_size * cfg.data.block_size
    per_token = ACT_PER_TOKEN[0] * s.hidden + ACT_PER_TOKEN[1] * s.intermediate
    if not bf16:
        per_token = int(per_token * FP32_ACT_FACTOR)
    if stage == "align":
        per_token = int(per_token * ALIGN_SHARE)
    if stage == "instruct" and not gpu:
        # Packed instruction rows attend within their own example: with that mask, attention on CPU keeps each
        # layer's [heads, T, T] probabilities (the same step at 1 x 1024 tokens in float32: 6.1 GiB, this term
        # included 6.07 GiB estimated; GPU kernels keep no such matrix)
        per_token += s.heads * cfg.data.block_size * compute_bytes
    recomputed = (min(cfg.checkpoint_layers, s.layers) or s.layers) if cfg.gradient_checkpointing else 0
    # A recomputed layer keeps only its input. The recomputed layers are the first ones, which the backward pass
    # reaches last, when every later layer's activations are already freed: at any moment at most the other
    # layers' activations, or one recomputed layer's, are alive beside the kept inputs.
    activations = tokens * (recomputed * s.hidden * CKPT_PER_HIDDEN + max(s.layers - recomputed, 1) * per_token)
    chunk = max(64, (8 << 20) // s.vocab) if not gpu else 4096
    terms = {
        "weights": linear_params(s) * (2 if bf16 else 4) + matrices * s.vocab * s.hidden * weight_bytes,
        "trained + grads + AdamW": trained * 16,
        "row copies": matrices * rows * s.hidden * weight_bytes,  # PEFT's copy of the original rows
        # the head weight with the trained rows merged in, in the compute dtype, kept by the loss (train/loss.py)
        "merged head": 0 if not rows and weight_bytes == compute_bytes else s.vocab * s.hidden * compute_bytes,
        "activations": activations,
        "head": 3 * chunk * s.vocab * 4 + tokens * s.hidden * 4,
        "runtime": 0 if gpu else RUNTIME_BYTES,
    }
    terms["total"] = sum(terms.values())
    return terms


def describe(terms: dict[str, int], where: str) -> str:
    """One line: the total and its three largest terms."""
    top = sorted(((k, v) for k, v in terms.items() if k != "total"), key=lambda kv: -kv[1])[:3]
    parts = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in top)
    return f"estimated peak {where} memory: {terms['total'] / 2**30:.1f} GiB ({parts} GiB)"


def estimate_line(stage: str, cfg, *, bf16: bool, gpu: bool) -> str:
    """The estimate for `cfg`'s model folder (config.json, and new_tokens.json for rows=new) as one line; what
    cannot be read is said instead of a number."""
    try:
        shape, rows = _shape_rows(cfg)
    except _UNREADABLE as exc:  # the run itself says it again, in full
        return f"no memory estimate ({cfg.model}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    where = "GPU" if gpu else "host"
    setting = (f"micro-batch {cfg.micro_batch_size} x {cfg.data.block_size} tokens, "
               f"{'bf16' if bf16 else 'fp32'}, activation checkpointing {_checkpointing(cfg, shape)}")
    return f"{describe(estimate_peak(shape, cfg, stage=stage, rows=rows, bf16=bf16, gpu=gpu), where)}; {setting}"


def fit_memory_limit(stage: str, cfg, *, bf16: bool, gpu: bool):
    """`cfg` as it will train under its `memory_limit_gib`: unchanged when the estimate fits (or there is no limit,
    or the model folder cannot be read yet: the run then fails on it with its own message); else with activation
    checkpointing on the fewest first decoder layers that bring the estimate under the limit. Recomputing changes
    no result, only time, and the first layers are the cheapest to hold (see `estimate_peak`)."""
    from dataclasses import replace

    if not cfg.memory_limit_gib:
        return cfg
    try:
        shape, rows = _shape_rows(cfg)
    except _UNREADABLE:
        return cfg
    limit = cfg.memory_limit_gib * 2**30

    def total(c) -> int:
        return estimate_peak(shape, c, stage=stage, rows=rows, bf16=bf16, gpu=gpu)["total"]

    if total(cfg) <= limit:
        return cfg
    for n in range(max(cfg.checkpoint_layers if cfg.gradient_checkpointing else 0, 1), shape.layers + 1):
        fitted = replace(cfg, gradient_checkpointing=True, checkpoint_layers=0 if n == shape.layers else n)
        if total(fitted) <= limit:
            return fitted
    raise UserError(f"memory_limit_gib={cfg.memory_limit_gib:g}: the estimated peak is {total(fitted) / 2**30:.1f} "
                    f"GiB even with activation checkpointing on every layer; lower micro_batch_size or "
                    f"data.block_size, or raise the limit")


_UNREADABLE = (OSError, ValueError, KeyError, TypeError, UserError)


def _shape_rows(cfg) -> tuple[Shape, int]:
    """The model folder's shape and the number of rows `cfg` trains."""
    from langgraft.formats.new_tokens import read_new_tokens

    shape = read_shape(cfg.model)
    rows = {"all": shape.vocab, "none": 0}.get(cfg.rows)
    if rows is None:
        rows = len(read_new_tokens(cfg.model, flag="model")["tokens"])
    return shape, rows


def _checkpointing(cfg, shape: Shape) -> str:
    if not cfg.gradient_checkpointing:
        return "off"
    n = min(cfg.checkpoint_layers, shape.layers) or shape.layers
    return "on" if n == shape.layers else f"on for {n} of {shape.layers} layers"
