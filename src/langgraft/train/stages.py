"""`langgraft train --stage align|pretrain|instruct`: resolve the config, build the stage's model and data, train.

align    — transformer frozen; embedding (+ untied head) rows trained on the bilingual dataset.
pretrain — LoRA on `lora.targets` + embedding/head rows on the monolingual dataset (+ optional English replay).
instruct — as pretrain, on an instructions dataset (loss on the responses only, see instruct.py).

The run directory is not built in a temp folder as a whole (checkpoints must survive a kill): it holds
`train_config.json` (resolved config + fingerprint, checked on `--resume`), `checkpoints/`, `metrics.jsonl`,
and, once finished, `adapter/` (PEFT format) and `manifest.json`, each written atomically, the manifest last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langgraft.config import load_config, to_dict
from langgraft.consolelog import own
from langgraft.errors import UserError
from langgraft.formats.dataset_json import dataset_info, is_prepared
from langgraft.hub import resolve_model
from langgraft.outfiles import open_output
from langgraft.rundir import (StageResult, atomic_dir, git_revision, input_identity, output_lock, package_versions,
                              read_manifest, write_json)
from langgraft.rundir.training import (CACHE, CHECKPOINTS, METRICS_NAME, dataset_identity,
                                       prepare_out, reached_step, read_metrics)
from langgraft.train.config import TrainConfig
from langgraft.train.cover import check_cover
from langgraft.train.data import build_data
from langgraft.train.loop import save_adapter
from langgraft.train.memory import estimate_line, fit_memory_limit
from langgraft.train.model import build_optimizer, build_stage_model, use_bf16
from langgraft.train.sharding import (FsdpOptions, check_launch, configure_zero, fsdp_options, gather_trained,
                                      is_sharded, local, shard, unsharded_env, zero_engine)
from langgraft.train.tracking import finish as finish_trackers, start as start_trackers, trackers

def run_inputs(cfg: TrainConfig) -> dict:
    """Identity of what the run reads besides its config: the model and the datasets (a model re-extended or
    a dataset re-prepared in place is another run)."""
    return {"model": input_identity(cfg.model), "dataset": dataset_identity(cfg.data.dataset),
            "replay": dataset_identity(cfg.data.replay) if cfg.data.replay else None}


STAGE_DATA = {"align": "bilingual", "pretrain": "monolingual", "instruct": "instructions"}


def train_from_file(stage: str, config_path, overrides=(), *, out, resume: bool = False,
                    force: bool = False) -> StageResult:
    """`langgraft train`: the stage's config from a YAML file (or the defaults) plus KEY=VALUE overrides."""
    cfg = load_config(TrainConfig, config_path, list(overrides))
    return train(stage, cfg, out=Path(out), resume=resume, force=force)


def train(stage: str, cfg: TrainConfig, *, out: Path, resume: bool = False, force: bool = False) -> StageResult:
    """Train `stage` into the run folder `out`; a finished run with the same config and inputs is returned as it
    is (skipped), `resume` continues an unfinished one from its last good checkpoint, `force` discards the run
    folder and trains again."""
    _validate(stage, cfg)
    # absolute: the adapter records it as its base, which must load from any working directory
    cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model, flag="model"))
    check_cover(cfg.data.cover_new_tokens, stage, cfg.model, cfg.data.replay_fraction)
    resolved = {"stage": stage, **to_dict(cfg)}
    identity = {k: v for k, v in resolved.items() if k != "report_to"}  # where metrics go changes no weight
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    inputs = run_inputs(cfg)
    done = read_manifest(out)
    if (done is not None and done.get("fingerprint") == fingerprint and done.get("inputs", inputs) == inputs
            and not force):
        own(out)
        return StageResult(out, done, skipped=True)
    engine = check_launch()
    with unsharded_env(engine):
        _train(Run(stage=stage, cfg=cfg, out=out, fingerprint=fingerprint, resolved=resolved, engine=engine,
                   sharding=fsdp_options() if engine == "FSDP" else None, force=force), resume)
    return StageResult(out, read_manifest(out) or {}, skipped=False)


def _train(run: Run, resume: bool) -> dict:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, ProjectConfiguration


    stage, cfg, out = run.stage, run.cfg, run.out
    track = trackers(cfg.report_to)
    precision = "bf16" if use_bf16(cfg.precision) else "no"
    # Accelerate keeps one mixed-precision setting per process and refuses another, but one process may train
    # several stages (`langgraft run`) at different precisions: drop its setting, keep the distributed state.
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without a GPU: only then does Accelerate turn a torchrun launch into gloo DDP (MULTI_CPU).
    # broadcast_buffers=False: the only buffers are constants (rotary tables, PEFT's copy of the original rows,
    # 17.5k × 4096 for a 7B model), and DDP would otherwise re-broadcast them on every forward pass.
    handlers = [DistributedDataParallelKwargs(broadcast_buffers=False)]
    zero_on_cpu = run.engine == "DEEPSPEED" and not torch.cuda.is_available()
    if zero_on_cpu:  # Accelerate would set up no process group for DeepSpeed without a GPU
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(mixed_precision=precision,
                              cpu=not torch.cuda.is_available() and not zero_on_cpu,
                              kwargs_handlers=handlers,
                              log_with=track or None,
                              project_config=ProjectConfiguration(project_dir=str(out),
                                                                  logging_dir=str(out / "tensorboard")))
    check_launch(run.engine, accelerator.distributed_type.name)
    run.accelerator = accelerator
    # memory_limit_gib may turn checkpointing on (the run's identity is the config as written, limit included)
    run.cfg, estimate = fitted_estimate(stage, cfg, gpu=accelerator.device.type == "cuda")
    cfg = run.cfg
    if run.sharding is not None:  # the formula is for one whole copy of the model
        estimate += f" (for the whole model: FSDP2 splits the weights over {accelerator.num_processes} ranks)"
    accelerator.print(estimate)
    # one writer per run folder (the main process holds the lock; other ranks are its own launch)
    with output_lock(out) if accelerator.is_main_process else contextlib.nullcontext():
        created = not out.exists()
        try:
            if accelerator.is_main_process:
                prepare_out(out, run.resolved, run.fingerprint, resume, run_inputs(cfg), force=run.force)
                own(out)
            accelerator.wait_for_everyone()
            start_trackers(accelerator, track, out, stage, run.resolved)
            run.started = time.time()
            torch.manual_seed(cfg.seed)
            run.tokenizer, run.peft_model, token_ids = build_stage_model(stage, cfg, accelerator)
            run.train_blocks, run.val, data_summary = build_data(stage, cfg, run.tokenizer, accelerator, out)
            run.summary = {**data_summary, "trained_rows": len(token_ids)}
            trainer, state = _fit(run, resume)
            return _save(run, trainer, state)
        except BaseException:
            # a start that failed before step 1 leaves no run folder behind (nothing in it could be resumed)
            if accelerator.is_main_process and created and not reached_step(out):
                shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            finish_trackers(accelerator)


def memory_estimate(stage: str, cfg: TrainConfig, *, gpu: bool | None = None) -> str:
    """The estimated peak memory of training `stage` with `cfg` on this machine, one line (train/memory.py), for
    the configuration `memory_limit_gib` makes of it."""
    return fitted_estimate(stage, cfg, gpu=gpu)[1]


def fitted_estimate(stage: str, cfg: TrainConfig, *, gpu: bool | None = None) -> tuple[TrainConfig, str]:
    """(the config `memory_limit_gib` makes of `cfg`, its estimate line)."""
    gpu = torch.cuda.is_available() if gpu is None else gpu
    bf16 = use_bf16(cfg.precision)
    fitted = fit_memory_limit(stage, cfg, bf16=bf16, gpu=gpu)
    line = estimate_line(stage, fitted, bf16=bf16, gpu=gpu)
    return fitted, line + (f" (to stay under memory_limit_gib={cfg.memory_limit_gib:g})" if fitted is not cfg else "")


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Run:
    """A training run as `train` sets it up: what the loop trains, where, and what the manifest records."""

    stage: str
    cfg: TrainConfig
    out: Path
    fingerprint: str
    resolved: dict  # the resolved config, as train_config.json holds it
    engine: str | None = None  # "FSDP" or "DEEPSPEED" as the launch asked (check_launch), None for DDP or none
    sharding: FsdpOptions | None = None  # FSDP2 settings under an FSDP launch, else None
    accelerator: Any = None
    tokenizer: Any = None
    peft_model: Any = None
    train_blocks: Any = None  # data.Blocks (memory-mapped) or a tensor
    val: Any = None  # (validation blocks, characters per token), or None without a validation split
    summary: dict = dataclasses.field(default_factory=dict)  # the data's figures; `_save` adds the training's
    started: float = 0.0  # time.time() when the run started (the manifest's wall time)
    force: bool = False  # discard a run already in `out` and train from scratch


def _fit(run: Run, resume: bool):
    """Optimizer and schedule, the latest good checkpoint when resuming, then the loop: (Trainer, LoopState)."""
    from langgraft.train.checkpoint import apply_checkpoint, latest_good_checkpoint
    from langgraft.train.loop import LoopState, Trainer, checkpoint, cosine_with_warmup, run_loop
    from langgraft.train.distill import loss_module as build_loss

    cfg, out, accelerator = run.cfg, run.out, run.accelerator
    world = accelerator.num_processes
    found = latest_good_checkpoint(out / CHECKPOINTS, rank=accelerator.process_index, world=world,
                                   log=_warn if accelerator.is_main_process else None) if resume else None
    digest = _checked_data(run, found[1].get("data_sha256") if found else None)
    per_step = cfg.micro_batch_size * cfg.grad_accum * world
    steps_per_epoch = run.train_blocks.shape[0] // per_step
    if steps_per_epoch == 0:
        raise UserError(f"data.dataset {cfg.data.dataset}: {run.train_blocks.shape[0]} blocks of "
                        f"{cfg.data.block_size} tokens, fewer than one step needs ({per_step}); lower "
                        "data.block_size or the batch")
    total = cfg.max_steps or steps_per_epoch * cfg.epochs
    loss_module = build_loss(run.peft_model, cfg)
    if run.sharding is not None:  # sharded first: the optimizer must hold the sharded parameters
        loss_module = shard(loss_module, accelerator, run.sharding)
    optimizer = build_optimizer(run.peft_model, cfg)
    scheduler = cosine_with_warmup(optimizer, round(cfg.optim.warmup_ratio * total), total, cfg.optim.min_lr_ratio)
    if run.sharding is None:
        if run.engine == "DEEPSPEED":
            configure_zero(accelerator, cfg)
        loss_module, optimizer = accelerator.prepare(loss_module, optimizer)
    state = LoopState(step=0, total_steps=total, steps_per_epoch=steps_per_epoch, data_sha256=digest)
    if found:
        saved = apply_checkpoint(found[0], found[1], found[2], model=accelerator.unwrap_model(loss_module),
                                 optimizer=optimizer, scheduler=scheduler, engine=zero_engine(accelerator))
        state.step, state.tokens, state.last_loss = saved["step"], saved["tokens"], saved["loss"]
    if accelerator.is_main_process:  # lines after the resumed step (or every line, from scratch) are redone
        _truncate_metrics(out / METRICS_NAME, state.step)
    trainer = Trainer(accelerator, loss_module, optimizer, scheduler, run.tokenizer)
    state = run_loop(trainer, run.train_blocks, cfg, out, state, run.val)
    if cfg.checkpoint_every:
        checkpoint(trainer, cfg, out, state)
    return trainer, state


def _checked_data(run: Run, recorded: str | None) -> str:
    """The digest of the run's blocks, after making sure they are the ones the resumed checkpoint trained on: a
    `packed-data/` changed since is named and tokenized again (the dataset itself is checked by the run's identity)."""
    from langgraft.train.data import build_data, data_digest

    digest = data_digest(run.train_blocks, run.val)
    if recorded is None or recorded == digest:
        return digest
    if run.accelerator.is_main_process:
        _warn(f"langgraft: warning: {run.out / CACHE} does not match the checkpoint's data checksum (changed "
              "since it was written); tokenizing again")
    run.train_blocks, run.val, _ = build_data(run.stage, run.cfg, run.tokenizer, run.accelerator, run.out,
                                              fresh=True)
    digest = data_digest(run.train_blocks, run.val)
    if digest != recorded:
        raise UserError(f"--resume {run.out}: the training data differs from what its checkpoints trained on; "
                        "rerun with --force to start over")
    return digest


def _save(run: Run, trainer, state) -> dict:
    """The run's summary; the main process writes adapter/ (PEFT format, with the tokenizer) and manifest.json."""
    from langgraft.train.adapter_card import write_adapter_card

    cfg, out, accelerator, loss_module = run.cfg, run.out, run.accelerator, trainer.loss_module
    summary = {**run.summary, "steps": state.step, "tokens": state.tokens, "final_loss": state.last_loss,
               "world_size": accelerator.num_processes,
               "rank_checksums": _rank_checksums(accelerator, loss_module)}
    summary.update(_last_eval(out / METRICS_NAME))
    module = accelerator.unwrap_model(loss_module)
    # the trained parameters only, gathered on the main process (under ZeRO their fp32 masters)
    weights = gather_trained(accelerator, module)[0]
    if accelerator.is_main_process:
        with atomic_dir(out / "adapter") as tmp:
            save_adapter(tmp, module, weights)
            run.tokenizer.save_pretrained(tmp)
            write_adapter_card(tmp, cfg.model, run.stage)
        write_json(out / "manifest.json", {
            "stage": run.stage, "fingerprint": run.fingerprint, "config": run.resolved, "parent": cfg.model,
            "inputs": run_inputs(cfg),
            "versions": package_versions(), "git_revision": git_revision(),
            "wall_time_s": round(time.time() - run.started, 3), "summary": summary})
        shutil.rmtree(out / CACHE, ignore_errors=True)  # only a resume needs the packed data
    accelerator.wait_for_everyone()
    return summary


def _rank_checksums(accelerator, loss_module) -> list[float]:
    """Sum of every trained weight on each rank (of its slice, sharded): data-parallel ranks must end
    bit-identical, else it is a bug."""
    params = [p for p in loss_module.parameters() if p.requires_grad]
    mine = torch.stack([local(p).detach().double().sum() for p in params]).sum().reshape(1).to(accelerator.device)
    sums = [float(x) for x in accelerator.gather(mine).cpu()]
    if accelerator.distributed_type.name in ("MULTI_CPU", "MULTI_GPU", "DEEPSPEED") and not is_sharded(loss_module):
        if len(set(sums)) != 1:
            raise RuntimeError(f"data-parallel ranks disagree after training: {sums}")
    return sums


def _validate(stage: str, cfg: TrainConfig) -> None:
    if stage not in STAGE_DATA:
        raise UserError(f"--stage {stage}: must be one of {', '.join(STAGE_DATA)}")
    if not cfg.model:
        raise UserError("model: required (the `langgraft extend` output dir)")
    if not cfg.data.dataset:
        raise UserError(f"data.dataset: required (a prepared {STAGE_DATA[stage]} dataset dir for --stage {stage})")
    if not is_prepared(cfg.data.dataset):
        raise UserError(f"data.dataset {cfg.data.dataset}: not a prepared dataset (no dataset.json)")
    if stage == "instruct":
        kind = dataset_info(cfg.data.dataset).get("kind")
        if kind != "instructions":
            raise UserError(f"data.dataset {cfg.data.dataset}: a {kind} dataset; --stage instruct needs an "
                            "instructions dataset (kind: instructions in the data config)")
        if cfg.data.replay_fraction:
            raise UserError("data.replay_fraction: only --stage pretrain mixes in replay data")
    if not 0 <= cfg.data.replay_fraction < 1:
        raise UserError(f"data.replay_fraction: must be in [0, 1), got {cfg.data.replay_fraction}")
    if cfg.data.replay_fraction and not cfg.data.replay:
        raise UserError("data.replay: required when data.replay_fraction > 0")
    for key in ("micro_batch_size", "grad_accum", "log_every"):
        if getattr(cfg, key) < 1:
            raise UserError(f"{key}: must be ≥ 1, got {getattr(cfg, key)}")
    if cfg.loss_chunk < 0:
        raise UserError(f"loss_chunk: must be ≥ 0 (0 = auto), got {cfg.loss_chunk}")
    if cfg.data.block_size < 2:
        raise UserError(f"data.block_size: must be ≥ 2, got {cfg.data.block_size}")
    if cfg.rows == "none":
        _check_rows_none(stage, cfg)
    if cfg.objective == "distill":
        from langgraft.train.distill import check_distill

        check_distill(stage, cfg.rows)


def _check_rows_none(stage: str, cfg: TrainConfig) -> None:
    """rows=none trains LoRA alone: align (rows only) has nothing to train, and a row learning rate is unused.
    A shared stage config (recipes/train/pretrain.yaml sets embed_lr) stays usable, so that is a warning."""
    if stage == "align":
        raise UserError("rows: none: --stage align trains only embedding/head rows, so nothing would train; "
                        "use rows: new or all, or leave align out of the run")
    if cfg.optim.embed_lr is not None:
        _warn(f"langgraft train: rows: none trains no embedding/head rows; optim.embed_lr "
              f"({cfg.optim.embed_lr:g}) is unused")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume drop metrics lines after the checkpoint's step: they are about to be recomputed. A line torn
    by a kill mid-append is dropped too."""
    if not path.is_file():
        return
    keep = [line for line in read_metrics(path) if line["step"] <= step]
    with open_output(path, "w") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in keep))


def _last_eval(path: Path) -> dict:
    if not path.is_file():
        return {}
    evals = [line for line in read_metrics(path) if "val_loss" in line]
    return {"val_loss": evals[-1]["val_loss"], "val_bpc": evals[-1]["val_bpc"]} if evals else {}
