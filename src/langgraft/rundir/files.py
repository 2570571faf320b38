"""Writing files and folders so that a kill never leaves half of one: temporary siblings renamed into place, leftovers
of a killed writer swept, the user's umask applied, and an OS lock per output so two writers never race.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from langgraft.consolelog import LOG
from langgraft.errors import UserError


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
