"""Typed configuration of `langgraft train` (align, pretrain and instruct share one engine and one config shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from langgraft.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Share

STAGES = ("align", "pretrain", "instruct")  # the training stages, in the order a recipe runs them
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DataConfig:
    dataset: str = ""  # a prepared dataset dir (`data prepare` output DIR/<dataset>, with dataset.json)
    replay: Optional[str] = None  # optional English prepared dataset mixed into training (pretrain only)
    replay_fraction: Annotated[float, Range(0, 1, hi_open=True)] = 0.0  # share of training blocks drawn from `replay` (0 ≤ x < 1)
    block_size: Annotated[int, Range(2)] = 512  # tokens per packed training block (instruct: per row of packed examples)
    max_texts: NonNegInt = 0  # read at most this many training texts / instruct examples (0 = all); for smoke runs
    workers: PosInt = 1  # processes tokenizing the training data into the cache (same blocks for any number)
    # keep only this many training blocks: the ones that together hold the most distinct new tokens (0 = all);
    # a short rows-only warm-up then touches as many new rows as its tokens can
    cover_new_tokens: NonNegInt = 0


@dataclass
class LoraConfig:
    r: PosInt = 8  # LoRA rank (paper: 8)
    alpha: PosInt = 32  # LoRA alpha (paper: 32)
    dropout: Annotated[float, Range(0, 1, hi_open=True)] = 0.05  # LoRA dropout (paper: 0.05)
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # module names to adapt


@dataclass
class OptimConfig:
    lr: PosFloat = 2e-4  # learning rate of the LoRA adapters (paper: 2e-4)
    embed_lr: Optional[PosFloat] = None  # learning rate of embedding/head rows (default: lr)
    weight_decay: NonNegFloat = 0.0  # AdamW decay of the adapters (embedding rows are never decayed)
    warmup_ratio: Share = 0.05  # share of steps with linear warmup (paper: 5%)
    min_lr_ratio: Share = 0.0  # cosine floor as a share of the peak learning rate
    max_grad_norm: NonNegFloat = 1.0  # gradient clipping (0 = off)


@dataclass
class TrainConfig:
    model: str = ""  # the extended model dir (`langgraft extend` output) or a previous stage's export
    # train only the new embedding/head rows (old rows bit-identical), every row, or none (LoRA only: the plain
    # continued-pretraining control, which runs on an unextended base)
    rows: Literal["new", "all", "none"] = "new"
    # lm: next-token loss; distill (--stage align, rows: new): the new rows learn to give each stretch of text the
    # likelihood the base gives it, the base (the frozen transformer and old rows inside the model) as teacher
    objective: Literal["lm", "distill"] = "lm"
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    micro_batch_size: PosInt = 4  # blocks per forward pass per process
    grad_accum: PosInt = 1  # micro-batches per optimizer step
    epochs: PosInt = 1  # passes over the training blocks (ignored when max_steps > 0)
    max_steps: NonNegInt = 0  # stop after this many optimizer steps (0 = run `epochs`)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto = bf16 autocast where supported; never fp16
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory, slower)
    # with gradient_checkpointing: recompute only the first N decoder layers (0 = all); the memory saved and the
    # time paid both grow with N, so a run that nearly fits checkpoints only what it must
    checkpoint_layers: NonNegInt = 0
    # GiB the training process should stay under (0 = no limit): when the estimated peak (train/memory.py) is
    # above it, activation checkpointing is turned on for the fewest first layers that bring the estimate under it
    memory_limit_gib: NonNegFloat = 0.0
    compile: bool = False  # torch.compile each decoder layer
    loss_chunk: NonNegInt = 0  # tokens per chunk of the fused head + cross-entropy; 0 = auto (see train/loss.py)
    seed: NonNegInt = 0  # the one seed of the run: data order, replay mix, LoRA init and dropout
    checkpoint_every: NonNegInt = 200  # optimizer steps between checkpoints (0 = only at the end)
    keep_checkpoints: NonNegInt = 2  # how many checkpoints to keep
    eval_every: NonNegInt = 200  # optimizer steps between validation runs (0 = only at the end)
    eval_batches: NonNegInt = 50  # validation micro-batches per run (0 = whole split)
    log_every: PosInt = 10  # optimizer steps between metrics.jsonl lines
    # experiment trackers the metrics also go to, through Accelerate (tensorboard, wandb, trackio, mlflow, ...);
    # null: TensorBoard when it is installed; []: none. Not part of the run's identity: changing it retrains nothing
    report_to: Optional[list[str]] = None
