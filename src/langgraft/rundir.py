"""Run directories: every stage writes one folder, atomically, and describes itself in `manifest.json`.

A stage builds its output in a hidden sibling temporary folder and renames it into place only on success, so a
failed or killed stage never leaves a half-written output behind. `manifest.json` records the stage name, the
resolved config, sha256 of every input file, package versions, the git revision of langgraft, the wall time and
whatever summary the stage returns. Rerunning a stage whose manifest fingerprint (stage + config + input hashes)
matches is a no-op that returns the stored manifest.

What a verb may replace is decided here, once for every verb (`check_out`, `check_replaceable`): an empty or
missing folder, or an earlier output of the same stage; never another stage's output or a folder langgraft did not
write (`--force` or not: it only reruns an output of the verb's own stage), never the working directory, a folder
holding it, $HOME or /, never a folder holding one of the stage's inputs or anything the command line names
(config and task files included, through symlinks), never an output inside one of its inputs. While a stage
writes, a sibling `.NAME.lock` is held with an OS file lock (filelock), which the OS releases when the process
dies, so a second writer gets one line naming the holder instead of racing it. Outputs get the user's umask like any other file.
"""

from __future__ import annotations

import contextlib
import contextvars
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


_held: dict[str, list] = {}  # lock files this process holds -> [FileLock, nesting depth]
if hasattr(os, "register_at_fork"):  # POSIX only; filelock itself closes the descriptor a forked child inherits
    os.register_at_fork(after_in_child=_held.clear)  # a child holds none of its parent's locks


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold `.NAME.lock` next to `out` (an OS lock through filelock: released by the OS if the process dies, and
    closed in a forked child so a worker never outlives its parent's hold); a second process gets one line naming
    the holder's pid. Re-entrant within a process."""
    out = Path(out).resolve()
    lock = out.parent / f".{out.name}.lock"
    key = str(lock)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    made = [d for d in (out.parent, *out.parent.parents) if not d.exists()]  # folders the lock has to create
    held = _acquire(lock, out)
    _held[key] = [held, 1]
    try:
        sweep_stale(out)  # before anything reads `out`: a killed writer's set-aside output is put back first
        yield
    finally:
        del _held[key]
        # unlinked while still held: a process that opened the old file notices (inode check) and retries
        with contextlib.suppress(OSError):
            os.unlink(lock)
        held.release()
        for folder in made:  # a failed start leaves no folders behind (rmdir: only while still empty)
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(lock: Path, out: Path):
    from filelock import FileLock, Timeout

    while True:
        descriptor: list[int] = []
        held = FileLock(lock, timeout=0, on_acquired=descriptor.append)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o666))  # an unwritable place fails here, not as "busy"
            held.acquire()
        except Timeout:
            try:
                holder = lock.read_text(errors="replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise UserError(f"--out {out}: another langgraft process (pid {holder}) is writing it; "
                            "wait for it to finish or pick another --out") from None
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write there ({exc.strerror})") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(descriptor[0]).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(descriptor[0], 0)
            os.lseek(descriptor[0], 0, os.SEEK_SET)  # os.pwrite is POSIX-only
            os.write(descriptor[0], f"{os.getpid()}\n".encode())
            return held
        held.release()  # the holder released and removed it between our open and lock: take the new one


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
        sweep_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=out.parent))
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


def _temp_prefix(path: Path) -> str:
    """Hidden work names carry the writer's pid, so a later run can tell a killed writer's leftovers."""
    return f".{path.name}.tmp-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(path: Path) -> None:
    """Remove `path`'s hidden temporary siblings (`.NAME.tmp-PID-*`, `.NAME.old-PID`) whose writer process is
    gone: a kill between mkdtemp and the rename leaves them, and nothing else would ever remove them. A leftover
    whose writer still runs (a live pid), or that names no pid, is left alone; a previous output set aside just
    before a kill is put back."""
    import glob

    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
        kind, _, rest = leftover.name[len(path.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not path.exists() and not path.is_symlink():
            os.replace(leftover, path)  # killed between its two renames: the previous output is still whole
        elif leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                leftover.unlink()


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
        sweep_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
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
