"""Experiment trackers through Accelerate (`report_to: [tensorboard, wandb, trackio, mlflow, ...]`).

Accelerate already speaks to every common tracker; langgraft only picks them, names the metrics the way the HF
Trainer does (`train/loss`, `train/learning_rate`, `eval/loss`, ...) so dashboards built for Trainer runs read
these too, and logs each optimizer group's learning rate (`train/learning_rate/embeddings`, `.../lora`), since
the new rows usually train at another rate than the adapters. metrics.jsonl stays the record the report reads;
trackers are a mirror of it. Files stay in the run folder where a tracker lets them: TensorBoard in
`RUN/tensorboard/`, MLflow in `RUN/mlruns/`, W&B in `RUN/wandb/` (online or offline by WANDB_MODE).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from langgraft.errors import UserError

# report_to name -> (module that must import, the pip package that provides it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "trackio": ("trackio", "trackio"), "mlflow": ("mlflow", "mlflow"), "aim": ("aim", "aim"),
            "comet_ml": ("comet_ml", "comet-ml"), "clearml": ("clearml", "clearml"),
            "dvclive": ("dvclive", "dvclive"), "swanlab": ("swanlab", "swanlab")}
# metrics.jsonl key -> the HF Trainer's tag
TAGS = {"loss": "train/loss", "grad_norm": "train/grad_norm", "tokens": "train/num_input_tokens_seen",
        "tokens_per_s": "train/tokens_per_second", "val_loss": "eval/loss", "val_bpc": "eval/bits_per_character"}
PROJECT = "langgraft"


def trackers(report_to: list[str] | None) -> list[str]:
    """The trackers to start: None means TensorBoard when it is installed (else none); a named one that is not
    installed is one line saying which package to install."""
    if report_to is None:
        return ["tensorboard"] if _installed("tensorboard") else []
    for name in report_to:
        if name not in TRACKERS:
            raise UserError(f"report_to: unknown tracker {name!r} (known: {', '.join(TRACKERS)})")
        module, package = TRACKERS[name]
        if not _installed(module):
            raise UserError(f"report_to: {name} is not installed here (pip install {package})")
    return list(dict.fromkeys(report_to))


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def start(accelerator, names: list[str], out: Path, stage: str, config: dict) -> None:
    """Start the trackers on the main process (Accelerate's own rule) with the run's config as hyperparameters."""
    if not names:
        return
    init = {"wandb": {"dir": str(out), "name": f"{stage} {out.name}"}, "mlflow": {"logging_dir": str(out / "mlruns")},
            "trackio": {"name": f"{stage} {out.name}"}}
    accelerator.init_trackers(PROJECT, config=_flat(config), init_kwargs={k: v for k, v in init.items() if k in names})


def finish(accelerator) -> None:
    """Close the trackers' files and runs. Not `accelerator.end_training()`: that also ends the process group,
    which the next stage of a multi-process `langgraft run` still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def log(accelerator, record: dict, groups: list[str]) -> None:
    """One metrics.jsonl record as HF-style scalars; `groups` names the optimizer groups of `record["lr"]`."""
    values = {TAGS[k]: float(v) for k, v in record.items() if k in TAGS and isinstance(v, (int, float))}
    lrs = record.get("lr") or []
    if lrs:
        # the Trainer's single rate is the adapters' (optim.lr) where there are adapters, else the rows'
        main = groups.index("lora") if "lora" in groups else 0
        values["train/learning_rate"] = float(lrs[main])
        for name, lr in zip(groups, lrs):
            values[f"train/learning_rate/{name}"] = float(lr)
    if values:
        accelerator.log(values, step=record["step"])


def _flat(config: dict, prefix: str = "") -> dict:
    """Nested config -> {"optim.lr": 2e-4, ...} with scalar values, which every tracker takes as hyperparameters."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
