"""Writing into an output folder langgraft writes again (a run folder on resume, a work folder, a log): never
through a link. A symbolic link or a hard link planted there would otherwise redirect an append or a truncation to
its target, a file of the user's; such a file is refused with one line naming it instead.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Sequence

from langgraft.errors import UserError

# "w" truncates only after the checks (O_TRUNC would cut a hard-linked file before it could be refused)
_MODES = {"a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "w": os.O_WRONLY | os.O_CREAT, "r+": os.O_RDWR}


def open_output(path: str | Path, mode: str = "a"):
    """Open a file of an output folder for writing ("a", "w", "r+", with "b" for bytes) without following a
    link: a symbolic link there, or a file with other hard links, is refused with one line, so a link planted in
    an output folder never redirects a write (or a truncation) to its target."""
    path = Path(path)
    try:
        fd = os.open(path, _MODES[mode.replace("b", "")] | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path}: is a symbolic link; langgraft never writes through a link in an output "
                            "folder (remove it)") from None
        raise UserError(f"{path}: cannot write ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise UserError(f"{path}: is not a plain file of its own (a hard link or a special file); langgraft "
                        "never writes through a link in an output folder (remove it)")
    if mode.startswith("w"):
        os.ftruncate(fd, 0)
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def check_no_links(folder: str | Path, names: Sequence[str] = ()) -> None:
    """One line when `folder` holds a symbolic link among `names` (every entry when empty): a folder langgraft
    writes into again (a run folder on resume) is written only through its own files."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() and (not names or entry.name in names):
            raise UserError(f"{entry}: is a symbolic link; langgraft never writes through a link in an output "
                            "folder (remove it)")
