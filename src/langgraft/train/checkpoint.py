"""Training checkpoints: trainable weights, optimizer, scheduler, step and RNG, written atomically, self-verifying.

A checkpoint holds only the parameters that train (LoRA + trained rows: megabytes, not the base model). It is
written into a temporary folder and renamed to `checkpoints/step-NNNNNNNN`, so a run killed mid-write leaves
the previous checkpoint intact; only the newest `keep` are kept. Each process saves its own RNG state
(`rng-RANK.pt`) so dropout streams resume exactly under DDP too.

Nothing here runs code from the files: they hold tensors, numbers and strings only and are read with
`torch.load(weights_only=True)` (numpy's RNG state is stored as a tensor, not a pickled array). Under ZeRO the
checkpoint also holds DeepSpeed's own files (`zero/`: the trained weights and each rank's optimizer partition),
which DeepSpeed reads with full unpickling; each is first read here with `weights_only=True`, allowing only
DeepSpeed's plain record classes (a loss scaler, a stage number, a fragment address), so a file that would run
code is refused before DeepSpeed opens it. Every checkpoint ends with `checksums.json` (sha256 of each file); a
resume verifies it first and skips to the previous checkpoint, naming the damaged one, when a file was changed,
cut short or cannot be read.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from langgraft.errors import UserError
from langgraft.rundir import atomic_dir, sha256_path, write_json
from langgraft.rundir.training import list_checkpoints

PREFIX = "step-"
CHECKSUMS = "checksums.json"
ZERO = "zero"  # DeepSpeed's checkpoint files (engine.save_checkpoint's tag folder)
ADAPTER = "adapter"  # the checkpoint's weights as a PEFT adapter folder
FORMAT = 2  # state.pt layout: trained weights and optimizer state keyed by parameter name (torch state-dict API)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        # as a tensor: a pickled ndarray would need numpy's globals, which weights_only loading rightly refuses
        state["numpy"] = [name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(root: Path, step: int, *, trained: tuple[dict, dict], scheduler, extra: dict, keep: int,
                    rank: int = 0, world: int = 1, barrier=lambda: None, adapter=None, engine=None) -> Path:
    """Write checkpoint `step` and prune old ones. `trained` is (weights, optimizer state) of the trained
    parameters as `sharding.trained_state` gathered them (full tensors on rank 0): rank 0 writes them, and calls
    `adapter(folder)` to write them again as a PEFT `adapter/` with the tokenizer, which `export --checkpoint` and
    every model-taking verb load; every rank writes its RNG, and under ZeRO `engine(folder)` (its part of the
    engine's files, `save_zero`)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    staging = root / f".{PREFIX}{step:08d}.rng"
    staging.mkdir(exist_ok=True)
    torch.save(rng_state(), staging / f"rng-{rank}.pt")
    if engine is not None:
        engine(staging)
    barrier()
    if rank == 0:
        weights, optimizer = trained
        with atomic_dir(final) as tmp:
            torch.save({"format": FORMAT, "model": weights, "optimizer": optimizer,
                        "scheduler": scheduler.state_dict(), "step": step, **extra}, tmp / "state.pt")
            for r in range(world):
                os.replace(staging / f"rng-{r}.pt", tmp / f"rng-{r}.pt")
            if engine is not None:
                os.replace(staging / ZERO, tmp / ZERO)
            if adapter is not None:
                adapter(tmp / ADAPTER)
            files = sorted(f.name for f in tmp.iterdir())
            write_json(tmp / CHECKSUMS, {name: sha256_path(tmp / name) for name in files})
        shutil.rmtree(staging, ignore_errors=True)
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def save_zero(engine, folder: Path) -> None:
    """This rank's part of DeepSpeed's checkpoint (the trained weights, its optimizer partition) in `folder/zero`;
    every rank calls it. DeepSpeed's own `latest` file and recovery scripts stay out of langgraft's checkpoint."""
    engine.save_checkpoint(str(folder), tag=ZERO, save_latest=False, exclude_frozen_parameters=True)


def _zero_readable(path: Path) -> str | None:
    """None when every file of DeepSpeed's part loads as tensors and plain records only, else why not."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    records = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]  # plain data, no code on load
    for file in sorted(p for p in (path / ZERO).rglob("*") if p.is_file()):
        try:
            with torch.serialization.safe_globals(records):
                torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - anything but tensors and plain records is refused
            return (f"{file.relative_to(path)} cannot be read safely ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0][:120]})")
    return None


def verify_checkpoint(path: Path, world: int = 1) -> str | None:
    """None when every file matches `checksums.json`; otherwise why not (one phrase naming the file)."""
    try:
        recorded = json.loads((path / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable {CHECKSUMS} (written by an older langgraft, or cut short)"
    needed = {"state.pt", *(f"rng-{r}.pt" for r in range(world))}
    missing = sorted(needed - set(recorded))
    if missing:
        return f"{missing[0]} missing"
    for name, digest in sorted(recorded.items()):
        if not (path / name).exists():
            return f"{name} missing"
        if sha256_path(path / name) != digest:
            return f"{name} does not match its checksum (changed or cut short)"
    return None


def read_checkpoint(path: Path, *, rank: int = 0, world: int = 1) -> tuple[dict, dict]:
    """(state, this rank's RNG state) of a verified checkpoint; a damaged one is a UserError naming it."""
    reason = verify_checkpoint(path, world)
    if reason is None and (path / ZERO).exists():
        reason = _zero_readable(path)
    if reason is None:
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
            rng = torch.load(path / f"rng-{rank}.pt", map_location="cpu", weights_only=True)
            return state, rng
        except Exception as exc:  # noqa: BLE001 - any unreadable content (incl. refused pickle code) is damage
            reason = f"cannot be read safely ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})"
    raise UserError(f"checkpoint {path}: {reason}")


def latest_good_checkpoint(root: Path, *, rank: int = 0, world: int = 1, log=None) -> tuple[Path, dict, dict] | None:
    """The newest checkpoint that verifies and reads, as (path, state, rng); each damaged newer one is named on
    stderr (by `log`) and skipped. None when there are no checkpoints; a UserError when none is intact."""
    found = list_checkpoints(root)
    problems = []
    for path in reversed(found):
        try:
            return (path, *read_checkpoint(path, rank=rank, world=world))
        except UserError as exc:
            problems.append(str(exc))
            if log is not None:
                log(f"langgraft: warning: {exc}; using the one before it")
    if found:
        raise UserError(f"--resume {root.parent}: no intact checkpoint ({problems[0]}); rerun with --force "
                        "to start over")
    return None


def apply_checkpoint(path: Path, state: dict, rng: dict, *, model, optimizer, scheduler, engine=None) -> dict:
    """Restore weights, optimizer, scheduler and this rank's RNG; returns the saved dict (step, extras). Every
    rank calls it (a collective under FSDP and ZeRO, whose engine reads its own files: `read_checkpoint` checked
    them)."""
    from langgraft.train.sharding import load_trained_state

    if engine is not None:
        if not (path / ZERO).is_dir():
            raise UserError(f"checkpoint {path}: written without ZeRO, and this run is launched with ZeRO; "
                            "resume it with the launch that wrote it")
        engine.load_checkpoint(str(path), tag=ZERO, load_module_strict=False, load_optimizer_states=True,
                               load_lr_scheduler_states=False)
    elif (path / ZERO).exists():
        raise UserError(f"checkpoint {path}: written under ZeRO (DeepSpeed); resume it with the same ZeRO launch")
    elif state.get("format") == FORMAT:
        load_trained_state(model, optimizer, state["model"], state["optimizer"])
    else:
        _load_positional(state, model, optimizer)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(rng)
    return state


def _load_positional(state: dict, model, optimizer) -> None:
    """A checkpoint from before FORMAT 2 (one process or DDP only): optimizer state keyed by position."""
    params = dict(model.named_parameters())
    unknown = sorted(set(state["model"]) - set(params))
    if unknown:
        raise UserError(f"checkpoint holds weights this model lacks ({unknown[0]}); was it written by this run?")
    with torch.no_grad():
        for name, value in state["model"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
