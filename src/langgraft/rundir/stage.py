"""A stage's output folder: where it may be written, whether it is already up to date, and its manifest.

See the package docstring for the rules; `run_stage` applies them to one verb's output.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from langgraft.consolelog import LOG, own
from langgraft.errors import UserError
from langgraft.rundir.files import atomic_dir, output_lock, sha256_path, write_json

MANIFEST = "manifest.json"
# every path the command being run reads (its arguments, the files a recipe names): no output may hold one
INPUTS: contextvars.ContextVar[tuple] = contextvars.ContextVar("langgraft_inputs", default=())
PACKAGES = ("langgraft", "torch", "transformers", "tokenizers", "sentencepiece", "peft", "accelerate", "datasets")


# Names (datasets, tasks, suites, models) become file and folder names: letters, digits, `_`, `-` and inner dots
NAME = re.compile(r"[^\W][\w.-]{0,99}")


def check_name(value: str, where: str) -> str:
    """`value` if it is a safe name (no `/`, no leading dot, so never `.` or `..`); else one UserError line."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise UserError(f"{where}: {value!r} is not a valid name (letters, digits, _ - and inner dots; "
                        "at most 100 characters)")
    return value


def check_relative(value: str, where: str, inside: str = "the data root (choose it with --data-root)") -> str:
    """`value` if it is a relative path that stays inside the folder it is resolved against (no `..`)."""
    if not isinstance(value, str) or Path(value).is_absolute() or ".." in Path(value).parts or value.startswith("~"):
        raise UserError(f"{where}: {value!r} must be a relative path inside {inside}, without `..`")
    return value


@dataclass
class StageResult:
    """What every verb returns: its output folder, the manifest there, and whether the folder was already up to
    date (nothing ran). `result[key]` reads the manifest's summary."""

    path: Path
    manifest: dict
    skipped: bool
    data: Any = None  # what the verb computed besides the folder, where a caller needs it (eval: the results)

    @property
    def summary(self) -> dict:
        return self.manifest.get("summary") or {}

    def __getitem__(self, key: str):
        return self.summary[key]

    def __contains__(self, key: str) -> bool:
        return key in self.summary

    def get(self, key: str, default=None):
        return self.summary.get(key, default)


def run_stage(
    out: str | Path,
    *,
    stage: str,
    config: dict,
    inputs: Sequence[str | Path],
    work: Callable[[Path], dict | None],
    force: bool = False,
) -> StageResult:
    """Run `work(tmp_dir)` unless `out` already holds a matching result; publish atomically with a manifest."""
    out = Path(out)
    started = time.time()
    check_out(out, inputs)
    with output_lock(out):
        input_hashes = {str(p): sha256_path(p) for p in inputs}
        fingerprint = _fingerprint(stage, config, input_hashes)
        existing = read_manifest(out)
        if existing is not None and existing.get("fingerprint") == fingerprint and not force:
            own(out)
            return StageResult(out, existing, skipped=True)
        check_replaceable(out, stage)
        own(out)
        with atomic_dir(out) as tmp:
            summary = work(tmp) or {}
            manifest = {
                "stage": stage,
                "fingerprint": fingerprint,
                "config": config,
                "inputs": input_hashes,
                "versions": package_versions(),
                "git_revision": git_revision(),
                "python": sys.version.split()[0],
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "wall_time_s": round(time.time() - started, 3),
                "build": uuid.uuid4().hex,  # tells two builds apart when they start in the same second
                "summary": summary,
            }
            write_json(tmp / MANIFEST, manifest)
    return StageResult(out, manifest, skipped=False)


def check_replaceable(out: Path, stage: str) -> None:
    """`out` may be (re)built by `stage`: missing, empty, or an earlier output of the same stage."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder (or is a link); refusing to overwrite")
    if not any(out.iterdir()):
        return
    existing = read_manifest(out)
    if existing is None:
        raise UserError(f"--out {out}: exists and is not a langgraft output; refusing to overwrite")
    other = existing.get("stage")
    if other != stage:
        raise UserError(f"--out {out}: holds a `{other}` output, not a `{stage}` one; pick another --out "
                        "(--force reruns only an output of the same stage)")


def _forms(path: str | Path) -> set[Path]:
    """A path as written (made absolute) and as the file system resolves it (through symlinks)."""
    path = Path(path).expanduser()
    return {Path(os.path.abspath(path)), path.resolve()}


def check_out(out: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Where no verb may write, `--force` or not: the working directory, a folder holding it, $HOME or /; a folder
    holding one of `inputs` or of the paths the command reads (`INPUTS`); a folder inside one of `inputs` (it
    would hash itself as an input and never be up to date)."""
    targets = _forms(out)
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    for target in targets:
        if target == cwd or target in cwd.parents or target in (home, Path(target.anchor)):
            raise UserError(f"--out {out}: is the working directory, a folder holding it, $HOME or /; "
                            "pick a new folder for the output")
    for item in (*inputs, *INPUTS.get()):
        for src in _forms(item):
            if src in targets or any(t in src.parents for t in targets):
                raise UserError(f"--out {out}: holds the input {item}; pick an --out that holds no input")
    for item in inputs:
        src = Path(item).resolve()
        if src.is_dir() and any(src in t.parents for t in targets):
            raise UserError(f"--out {out}: is inside the input folder {item}; pick an --out outside the inputs")


def folder_stamp(path: str | Path) -> dict:
    """Cheap identity of a folder's files (name -> [size, mtime]): model weights are too large to hash on every
    run, and rewriting them in place changes the stamp."""
    p = Path(path)
    files = sorted(f for f in p.glob("*") if f.is_file() and f.name != LOG) if p.is_dir() else []
    return {f.name: [f.stat().st_size, int(f.stat().st_mtime)] for f in files}


def input_identity(path: str | Path) -> Any:
    """What a stage records about an input folder it reads (a model, a prepared dataset): the producing
    stage's fingerprint and start time when langgraft wrote it (exact and free), else `folder_stamp`."""
    stamp = output_stamp(path)
    return list(stamp[:2]) if stamp is not None else folder_stamp(path)


def output_stamp(out: str | Path) -> tuple | None:
    """Identity of one published output: a rerun that skipped leaves it unchanged, a rebuild changes it."""
    m = read_manifest(out)
    return None if m is None else (m.get("fingerprint"), m.get("started"), m.get("wall_time_s"), m.get("build"))


def read_manifest(out: str | Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _fingerprint(stage: str, config: dict, input_hashes: dict) -> str:
    blob = json.dumps({"stage": stage, "config": config, "inputs": input_hashes}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
