"""Run directories: every stage writes one folder, atomically, and describes itself in `manifest.json`.

A stage builds its output in a hidden sibling temporary folder and renames it into place only on success, so a
failed or killed stage never leaves a half-written output behind. `manifest.json` records the stage name, the
resolved config, sha256 of every input file, package versions, the git revision of langgraft, the wall time and
whatever summary the stage returns. Rerunning a stage whose manifest fingerprint (stage + config + input hashes)
matches is a no-op that returns the stored manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from langgraft.errors import UserError

MANIFEST = "manifest.json"
PACKAGES = ("langgraft", "torch", "transformers", "tokenizers", "sentencepiece", "peft", "accelerate", "datasets")


@dataclass
class StageResult:
    path: Path
    manifest: dict
    skipped: bool


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
    input_hashes = {str(p): sha256_path(p) for p in inputs}
    fingerprint = _fingerprint(stage, config, input_hashes)
    existing = read_manifest(out)
    if existing is not None and existing.get("fingerprint") == fingerprint and not force:
        return StageResult(out, existing, skipped=True)
    if out.exists() and existing is None and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not a langgraft output; refusing to overwrite")
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
            "summary": summary,
        }
        write_json(tmp / MANIFEST, manifest)
    return StageResult(out, manifest, skipped=False)


def read_manifest(out: str | Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out`, on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        # Two renames instead of rmtree-then-rename: the old result stays valid until the new one is in place.
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(_sha256_file(child).encode())
        return digest.hexdigest()
    raise UserError(f"input not found: {path}")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
