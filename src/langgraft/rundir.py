"""Run directories: every stage writes one folder, atomically, and describes itself in `manifest.json`.

A stage builds its output in a hidden sibling temporary folder and renames it into place only on success, so a
failed or killed stage never leaves a half-written output behind. `manifest.json` records the stage name, the
resolved config, sha256 of every input file, package versions, the git revision of langgraft, the wall time and
whatever summary the stage returns. Rerunning a stage whose manifest fingerprint (stage + config + input hashes)
matches is a no-op that returns the stored manifest.

What a stage may replace is decided here, once for every verb: an empty or missing folder, or an earlier output
of the same stage (another stage's output only with `--force`); never a folder langgraft did not write, never a
folder holding one of the stage's inputs, never an output inside one of its inputs. While a stage writes, a
sibling `.NAME.lock` is held with `flock`, which the kernel releases when the process dies, so a second writer
gets one line naming the holder instead of racing it. Outputs get the user's umask like any other file.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from langgraft.consolelog import LOG, own
from langgraft.errors import UserError

MANIFEST = "manifest.json"
# `--force` of the verb being run: replace an up-to-date output, or another stage's output (never a non-langgraft one)
FORCE: contextvars.ContextVar[bool] = contextvars.ContextVar("langgraft_force", default=False)
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
    force = force or FORCE.get()
    started = time.time()
    check_apart(out, inputs)
    with output_lock(out):
        input_hashes = {str(p): sha256_path(p) for p in inputs}
        fingerprint = _fingerprint(stage, config, input_hashes)
        existing = read_manifest(out)
        if existing is not None and existing.get("fingerprint") == fingerprint and not force:
            own(out)
            return StageResult(out, existing, skipped=True)
        check_replaceable(out, stage, force=force)
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


def check_replaceable(out: Path, stage: str, *, force: bool = False) -> None:
    """`out` may be (re)built by `stage`: missing, empty, or an output of the same stage (another's with force)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; refusing to overwrite")
    if not any(out.iterdir()):
        return
    existing = read_manifest(out)
    if existing is None:
        raise UserError(f"--out {out}: exists and is not a langgraft output; refusing to overwrite")
    other = existing.get("stage")
    if other != stage and not force:
        raise UserError(f"--out {out}: holds a `{other}` output, not a `{stage}` one; pick another --out "
                        "(or pass --force to replace it)")


def check_apart(out: Path, inputs: Sequence[str | Path]) -> None:
    """An output may neither contain an input (replacing it would delete the input) nor lie inside one (it
    would hash itself as an input and never be up to date)."""
    target = out.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if src == target or target in src.parents:
            raise UserError(f"--out {out}: contains the input {item}; pick an --out outside the inputs")
        if src in target.parents and src.is_dir():
            raise UserError(f"--out {out}: is inside the input folder {item}; pick an --out outside the inputs")


_held: dict[str, int] = {}  # lock files this process holds -> nesting depth
_fds: dict[str, int] = {}  # lock files this process holds -> their descriptor


def _forget_locks_in_child() -> None:
    """A forked child (a pool worker, a manager process) shares the parent's open lock files, and an flock lasts
    while any process holds one open: close them, so the lock dies with the process that took it."""
    for fd in _fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _fds.clear()
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold `.NAME.lock` next to `out` (flock: released by the kernel if the process dies); a second process
    gets one line naming the holder's pid. Re-entrant within a process."""
    out = Path(out).resolve()
    lock = out.parent / f".{out.name}.lock"
    key = str(lock)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    made = [d for d in (out.parent, *out.parent.parents) if not d.exists()]  # folders the lock has to create
    fd = _acquire(lock, out)
    _held[key], _fds[key] = 1, fd
    try:
        yield
    finally:
        del _held[key], _fds[key]
        # unlinked while still held: a process that opened the old file notices (inode check) and retries
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        for folder in made:  # a failed start leaves no folders behind (rmdir: only while still empty)
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(lock: Path, out: Path) -> int:
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"--out {out}: another langgraft process (pid {holder}) is writing it; "
                            "wait for it to finish or pick another --out") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock: take the new one


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


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out`, on failure it is removed."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror})") from None
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700: outputs are shared like any folder the user makes
        yield tmp
        _apply_umask(tmp)
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


def _apply_umask(folder: Path) -> None:
    """Give every file and folder under `folder` the mode a plain `open` would: safetensors (and so every
    `save_pretrained`) writes weights through a 0600 temporary file, which would leave the weights of a shared
    output unreadable to the group while everything beside them is 0644. Executable bits are kept."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, (0o777 if mode & 0o100 else 0o666) & ~mask)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        # langgraft.log (console text, appended on every run there) is not content: leave it out
        for child in sorted(p for p in path.rglob("*") if p.is_file() and p.name != LOG):
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
