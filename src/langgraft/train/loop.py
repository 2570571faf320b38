"""The one training loop: align, pretrain and instruct all run through `run_loop`.

Accelerate does the device placement, DDP/DeepSpeed wrapping, bf16 autocast and gradient clipping (FSDP2 sharding
is langgraft's own, `sharding.py`); the loop itself is written out so that the step counter alone defines the data
position (see `data.batch_indices`), which makes resuming exact. Gradient accumulation skips the gradient
all-reduce (DDP) or reduce-scatter (FSDP2) on all but the last micro-batch.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from langgraft.errors import UserError
from langgraft.outfiles import open_output
from langgraft.rundir.training import METRICS_NAME
from langgraft.train.checkpoint import list_checkpoints, save_checkpoint, save_zero
from langgraft.train.data import batch_indices
from langgraft.train.sharding import backward, full, gather_trained, gradient_sync, is_sharded, zero_engine
from langgraft.train.tracking import log as log_to_trackers


@dataclass
class Trainer:
    """What every step works on, as `accelerator.prepare` returned it: the loss module (the model inside), its
    optimizer and learning-rate schedule."""

    accelerator: Any
    loss_module: Any
    optimizer: Any
    scheduler: Any
    tokenizer: Any = None  # saved with each checkpoint's adapter/, so `export --checkpoint` has it


@dataclass
class LoopState:
    step: int
    total_steps: int
    steps_per_epoch: int
    tokens: int = 0
    last_loss: float = float("nan")
    data_sha256: str = ""  # of the packed blocks trained on; each checkpoint records it (resume checks it)


def cosine_with_warmup(optimizer, warmup: int, total: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(accelerator, loss_module, blocks: torch.Tensor, micro: int, max_batches: int, chars_per_token: float):
    """Validation loss (nats/token) and bits per character over (a prefix of) the validation blocks."""
    module = accelerator.unwrap_model(loss_module)
    module.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    n_batches = math.ceil(blocks.shape[0] / micro)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    world, rank = accelerator.num_processes, accelerator.process_index
    # sharded, every rank takes part in every forward (it gathers the weights), so all run the same number of
    # batches and a rank past the end scores batch 0 again and leaves it out
    rounds = math.ceil(n_batches / world) if is_sharded(module) else len(range(rank, n_batches, world))
    for r in range(rounds):
        b = rank + r * world
        start = (b if b < n_batches else 0) * micro
        ids = blocks[start:start + micro].to(accelerator.device)
        with accelerator.autocast():
            nats, count = module.loss_sum(ids)
        if b < n_batches:
            total += torch.tensor([nats, count], dtype=torch.float64, device=accelerator.device)
    total = accelerator.reduce(total, reduction="sum")
    module.train()
    loss = float(total[0] / total[1].clamp(min=1))
    # bits per character: nats per token → bits per token → divide by the split's characters per token
    return {"val_loss": loss, "val_bpc": loss / math.log(2) / chars_per_token}


def run_loop(trainer: Trainer, train_blocks: torch.Tensor, cfg, out: Path, state: LoopState, val=None) -> LoopState:
    """Train from `state.step` to `state.total_steps`; `val` is (blocks, chars_per_token) or None."""
    from tqdm import tqdm

    accelerator, loss_module, optimizer, scheduler = (trainer.accelerator, trainer.loss_module, trainer.optimizer,
                                                      trainer.scheduler)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro, accum = cfg.micro_batch_size, cfg.grad_accum
    params = [p for p in loss_module.parameters() if p.requires_grad]
    groups = [g.get("name", f"group_{i}") for i, g in enumerate(optimizer.param_groups)]
    metrics = out / METRICS_NAME
    bar = tqdm(total=state.total_steps, initial=state.step, disable=not accelerator.is_main_process,
               unit="step", dynamic_ncols=True, file=sys.stderr)
    t0, tokens0 = time.perf_counter(), state.tokens
    loss_module.train()
    while state.step < state.total_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        parts = batch_indices(train_blocks.shape[0], state.step, micro, accum=accum, world=world, rank=rank,
                              seed=cfg.seed, steps_per_epoch=state.steps_per_epoch)
        for m, idx in enumerate(parts):
            ids = train_blocks[idx].to(accelerator.device)
            sync = m == accum - 1
            with gradient_sync(accelerator, loss_module, sync):
                with accelerator.autocast():
                    loss = loss_module(ids) / accum
                backward(accelerator, loss, sync)
            step_loss += loss.detach()
        step_loss = accelerator.reduce(step_loss, reduction="mean")
        if not torch.isfinite(step_loss):
            _stop_on_nan(optimizer, out, state)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm) if cfg.optim.max_grad_norm else None
        grad_norm = None if grad_norm is None else full(grad_norm)  # sharded: the norm of the whole gradient
        lrs = scheduler.get_last_lr()  # the rates this step used (logged below)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens += micro * accum * world * train_blocks.shape[-1]
        state.last_loss = float(step_loss)
        rate = (state.tokens - tokens0) / max(time.perf_counter() - t0, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{state.last_loss:.4f}", lr=f"{lrs[0]:.2e}", tok_s=f"{rate:,.0f}")
        record = {}
        if state.step % cfg.log_every == 0 or state.step == state.total_steps:
            record = {"step": state.step, "loss": state.last_loss, "lr": lrs,
                      "grad_norm": None if grad_norm is None else float(grad_norm), "tokens": state.tokens,
                      "tokens_per_s": round(rate, 1)}
        due = state.step == state.total_steps or (cfg.eval_every and state.step % cfg.eval_every == 0)
        if val is not None and due:
            scores = evaluate(accelerator, loss_module, val[0], micro, cfg.eval_batches, val[1])
            record = {"step": state.step, **record, **scores}
            if accelerator.is_main_process:  # above the bar, which keeps drawing below it
                bar.write(f"step {state.step}/{state.total_steps}: train loss {state.last_loss:.4f}, validation "
                          f"loss {scores['val_loss']:.4f} (bpc {scores['val_bpc']:.3f})", file=sys.stderr)
        if record and accelerator.is_main_process:
            with open_output(metrics, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if record:
            log_to_trackers(accelerator, record, groups)
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < state.total_steps:
            checkpoint(trainer, cfg, out, state)
    bar.close()
    return state


def checkpoint(trainer: Trainer, cfg, out: Path, state: LoopState) -> Path:
    accelerator = trainer.accelerator
    module = accelerator.unwrap_model(trainer.loss_module)
    engine = zero_engine(accelerator)
    # every rank: a collective under FSDP and ZeRO; ZeRO's optimizer state goes into the engine's own files
    trained = gather_trained(accelerator, module, trainer.optimizer)
    tokenizer = trainer.tokenizer

    def adapter(folder: Path) -> None:
        save_adapter(folder, module, trained[0])
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    return save_checkpoint(out / "checkpoints", state.step, trained=trained, scheduler=trainer.scheduler,
                           extra={"tokens": state.tokens, "loss": state.last_loss, "data_sha256": state.data_sha256},
                           keep=cfg.keep_checkpoints, rank=accelerator.process_index, world=accelerator.num_processes,
                           barrier=accelerator.wait_for_everyone, adapter=adapter,
                           engine=None if engine is None else partial(save_zero, engine))


def save_adapter(folder: Path, module, weights: dict) -> None:
    """The loss module's PEFT adapter from `weights` (the trained parameters, gathered), never from the model's own
    (possibly sharded) tensors."""
    module.peft_model.save_pretrained(folder, state_dict={k.removeprefix("peft_model."): v for k, v in weights.items()})


def _stop_on_nan(optimizer, out: Path, state: LoopState) -> None:
    """Stop without saving: the weights that produced a non-finite loss are not a "last good" checkpoint, and
    saving them would also prune the older, good ones."""
    optimizer.zero_grad(set_to_none=True)
    found = list_checkpoints(out / "checkpoints")
    last = f"the last checkpoint is {found[-1]} (--resume continues from it)" if found else "no checkpoint was saved"
    raise UserError(f"loss is not finite at step {state.step + 1}; stopped without saving, {last}; lower "
                    "optim.lr / optim.embed_lr, or check the data and the model it started from")
