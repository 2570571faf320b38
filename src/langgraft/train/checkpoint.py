"""Training checkpoints: trainable weights, optimizer, scheduler, step and RNG, written atomically.

A checkpoint holds only the parameters that train (LoRA + trained rows: megabytes, not the base model). It is
written into a temporary folder and renamed to `checkpoints/step-NNNNNNNN`, so a run killed mid-write leaves
the previous checkpoint intact; only the newest `keep` are kept. Each process saves its own RNG state
(`rng-RANK.pt`) so dropout streams resume exactly under DDP too.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from langgraft.rundir import atomic_dir

PREFIX = "step-"


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
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

        np.random.set_state(state["numpy"])


def save_checkpoint(root: Path, step: int, *, model, optimizer, scheduler, extra: dict, keep: int,
                    rank: int = 0, world: int = 1, barrier=lambda: None) -> Path:
    """Write checkpoint `step` (rank 0 writes weights/optimizer; every rank its RNG) and prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    staging = root / f".{PREFIX}{step:08d}.rng"
    staging.mkdir(exist_ok=True)
    torch.save(rng_state(), staging / f"rng-{rank}.pt")
    barrier()
    if rank == 0:
        with atomic_dir(final) as tmp:
            torch.save({"model": trainable_state(model), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step, **extra}, tmp / "state.pt")
            for r in range(world):
                os.replace(staging / f"rng-{r}.pt", tmp / f"rng-{r}.pt")
        shutil.rmtree(staging, ignore_errors=True)
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def load_checkpoint(path: Path, *, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore weights, optimizer, scheduler and this rank's RNG; returns the saved dict (step, extras)."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["model"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(torch.load(path / f"rng-{rank}.pt", map_location="cpu", weights_only=False))
    return state
