"""A training run's folder: what it may hold, and whether a new, resumed or forced run may start in it.

The run folder is not built in a temporary folder as a whole (its checkpoints must survive a kill), so the rules
that `rundir` applies to every other output are spelled out here for it: `train_config.json` (resolved config,
fingerprint and input identities) is checked on `--resume`, `--force` discards only a folder holding nothing but
a run's own files, and a finished run is never trained over with another config.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from langgraft.consolelog import LOG
from langgraft.errors import UserError
from langgraft.outfiles import check_no_links
from langgraft.rundir.files import write_json
from langgraft.rundir.stage import check_out, folder_stamp, output_stamp

CONFIG_NAME = "train_config.json"  # the resolved config, its fingerprint and the inputs' identities
METRICS_NAME = "metrics.jsonl"  # a line per logged step: losses, learning rates, tokens/s; validation lines
CACHE = "packed-data"  # the packed-data cache: train.npy, validation.npy (int32) and cache.json
CHECKPOINTS = "checkpoints"
CHECKPOINT = re.compile(r"step-[0-9]{8}")  # a checkpoint folder's name, exactly


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    # only names langgraft writes (a name read from disk reaches messages and the log): never a link
    return sorted(p for p in root.iterdir() if CHECKPOINT.fullmatch(p.name) and not p.is_symlink() and p.is_dir())


def reached_step(out: Path) -> bool:
    metrics = out / METRICS_NAME
    return bool(list_checkpoints(out / CHECKPOINTS)) or (metrics.is_file() and metrics.stat().st_size > 0)


def dataset_identity(path: str):
    """What a run records about a prepared dataset it reads: the identity of the `data prepare` output holding it
    (a dataset re-prepared in place is another run)."""
    stamp = output_stamp(Path(path).parent)
    return list(stamp[:2]) if stamp is not None else folder_stamp(path)


def prepare_out(out: Path, resolved: dict, fingerprint: str, resume: bool, inputs: dict, *,
                force: bool = False) -> None:
    data = resolved["data"]
    check_out(out, [p for p in (resolved["model"], data["dataset"], data["replay"]) if p and Path(p).exists()])
    check_no_links(out)  # a run folder is written into again on resume: only through its own files
    check_no_links(out / CHECKPOINTS)
    saved_path = out / CONFIG_NAME
    saved = _check_run_folder(out) if saved_path.is_file() else None
    if saved_path.is_file() and force:
        print(f"langgraft train: --force: discarding the run in {out}", file=sys.stderr)
        shutil.rmtree(out)
    elif saved_path.is_file() and not reached_step(out) and not (out / "manifest.json").is_file():
        pass  # a run that never reached step 1 has nothing to keep: start it again with this config
    elif saved is not None:
        same_config = saved.get("fingerprint") == fingerprint
        # a manifest that records no inputs has nothing to compare: the run counts as built on the current ones
        changed = next((k for k, v in inputs.items() if saved.get("inputs", inputs).get(k) != v), None)
        if (out / "manifest.json").is_file():
            if same_config:
                raise UserError(f"--out {out}: holds a finished run built on another {changed} (rebuilt since); "
                                "pick a new --out or pass --force to train again")
            key = first_difference(saved.get("config", {}), resolved)
            raise UserError(f"--out {out}: holds a finished run with another config ({key}); pick a new --out")
        if not resume:
            raise UserError(f"--out {out}: holds an unfinished run; pass --resume to continue it or pick a new --out")
        if not same_config:
            key = first_difference(saved.get("config", {}), resolved)
            raise UserError(f"--resume {out}: config differs from the run's ({key}); use the same config")
        if changed:
            raise UserError(f"--resume {out}: the run's {changed} was rebuilt since it started; pass --force to "
                            "train again from scratch")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; refusing to overwrite")
    if out.is_dir() and any(p.name not in RUN_FILES for p in out.iterdir()):
        raise UserError(f"--out {out}: exists and is not a langgraft training run; refusing to overwrite")
    write_json(saved_path, {"fingerprint": fingerprint, "config": resolved, "inputs": inputs})


# what a run folder that never reached step 1 may hold (restarting it replaces them)
RUN_FILES = {CONFIG_NAME, CACHE, "data.pt", CHECKPOINTS, METRICS_NAME, "tensorboard", "mlruns", "wandb",
             LOG}  # data.pt: the packed-data cache of earlier versions


def _run_file(name: str) -> bool:
    """A name a training run writes at its top level, or a hidden temporary of one (`.packed-data.tmp-…`,
    `.adapter.tmp-…`, `.manifest.json.…`) that a kill mid-write can leave behind."""
    known = RUN_FILES | {"adapter", "manifest.json"}
    return name in known or (name.startswith(".") and any(name[1:].startswith(k + ".") for k in known))


def _check_run_folder(out: Path) -> dict:
    """The run's saved train_config.json. `--force` discards a training run only: a folder holding anything a run
    does not write (a project that happens to have a train_config.json) or whose train_config.json langgraft did
    not write is refused."""
    foreign = sorted(p.name for p in out.iterdir() if not _run_file(p.name))
    try:
        saved = json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        saved = None
    if foreign or not isinstance(saved, dict) or not {"fingerprint", "config"} <= saved.keys():
        why = f"it also holds {foreign[0]}" if foreign else f"its {CONFIG_NAME} was not written by langgraft"
        raise UserError(f"--out {out}: not a langgraft training run ({why}); --force discards only a training "
                        "run, pick another --out")
    return saved


def first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} → {b!r}"


def read_train_config(run: Path) -> dict | None:
    """The resolved config a training run in `run` recorded when it started, or None when it holds none."""
    path = run / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{path}: not valid JSON") from None
    return saved.get("config") if isinstance(saved, dict) else None


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, in order; a line torn by a kill mid-append is left out."""
    lines = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue  # only a kill mid-write makes one (the loop writes whole lines)
        if isinstance(record, dict) and "step" in record:
            lines.append(record)
    return lines
