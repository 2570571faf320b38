"""`langgraft.log` in each output folder: what the console showed while a verb ran there.

The CLI tees stdout and stderr while a verb runs and, when it ends (finished, failed or interrupted), appends
the text to `OUT/langgraft.log` under a header with the time, the command and its exit status. Progress bars
redraw one line with carriage returns many times a second; the log keeps what a terminal would finally show on
that line (the last frame), not every frame. The log is written only into a folder the verb took as its own in
this invocation: the place that decides whether an output may be (re)built (`rundir.run_stage`, a training run's
start, a pipeline or demo folder's check) calls `own(folder)` once it has accepted the folder, so a folder the
verb refused (another stage's output, a foreign folder) never gets a log. The folder must also hold a langgraft
marker (`manifest.json`, `train_config.json` or `pipeline.json`) by the end: a failed start leaves none, and a log
alone would make an empty folder look foreign to the next run. Only the main process of a multi-process launch
writes it. Folder hashes (`rundir.sha256_path`) leave the log out, so appending to it never
makes a downstream stage look out of date.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from langgraft.errors import UserError
from langgraft.outfiles import open_output

LOG = "langgraft.log"
MARKERS = ("manifest.json", "train_config.json", "pipeline.json")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal_text(text: str) -> str:
    """`text` as a terminal leaves it: after a carriage return the next characters overwrite the line from its
    start; ANSI cursor/colour codes are dropped; lines that end up blank only because a bar cleared them go."""
    lines = []
    for raw in _ANSI.sub("", text).split("\n"):
        shown = ""
        for segment in raw.split("\r"):
            shown = segment + shown[len(segment):]
        shown = shown.rstrip()
        if shown or "\r" not in raw:
            lines.append(shown)
    return "\n".join(lines)


class _Tee:
    """A text stream that writes through to `stream` and keeps a copy, collapsing bar frames as it goes (so a
    long training run's thousands of frames do not pile up in memory)."""

    def __init__(self, stream, done: list[str]):
        self._stream, self._done, self._line = stream, done, ""

    def write(self, text: str) -> int:
        self._stream.write(text)
        head, sep, self._line = (self._line + text).rpartition("\n")
        if sep:
            self._done.append(terminal_text(head) + "\n")
        if "\r" in self._line:
            self._line = "\r" + terminal_text(self._line)  # keep the latest frame, still overwritable
        return len(text)

    def pending(self) -> str:
        return terminal_text(self._line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ... as the real stream has them
        return getattr(self._stream, name)


_active: list[list[str]] = []  # the capture in progress, if any
_mirrors: list[_Tee] = []
_owned: set[Path] = set()  # folders the verb being captured accepted as its output


def own(folder: str | Path) -> None:
    """Record that the verb being captured accepted `folder` as its own output (may write its log there)."""
    if _active:
        _owned.add(Path(folder).resolve())


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Tee stdout and stderr for the duration; yields the list the captured text is collected in."""
    done: list[str] = []
    _owned.clear()
    out, err = _Tee(sys.stdout, done), _Tee(sys.stderr, done)
    sys.stdout, sys.stderr = out, err
    _active.append(done)
    try:
        yield done
    finally:
        sys.stdout, sys.stderr = out._stream, err._stream
        _active.remove(done)
        for tee in (out, err, *_mirrors):
            if tee.pending():
                done.append(tee.pending() + "\n")
        _mirrors.clear()


def mirror(stream):
    """`stream`, also captured into the log when a capture is on: for progress bars written to a saved console
    file descriptor while fd 2 is redirected (data prepare sends its engine's logs there)."""
    if not _active:
        return stream
    tee = _Tee(stream, _active[-1])
    _mirrors.append(tee)
    return tee


def append_log(folder: str | Path | None, argv: Sequence[str], status: int, captured: Sequence[str],
               started: float) -> Path | None:
    """Append the captured console text to `folder/langgraft.log` when the verb owned `folder` (see above)."""
    if folder is None or int(os.environ.get("RANK", "0") or 0) != 0:
        return None
    folder = Path(folder)
    if folder.resolve() not in _owned or not any((folder / marker).is_file() for marker in MARKERS):
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
    header = (f"=== {stamp} langgraft {' '.join(argv)} (exit {status}, "
              f"{time.time() - started:.1f} s, cwd {os.getcwd()})\n")
    try:
        with open_output(folder / LOG, "a") as fh:
            fh.write(header + "".join(captured) + "\n")
    except (OSError, UserError) as exc:  # a log that cannot be written must not turn a finished verb into a failure
        if isinstance(exc, UserError):
            print(f"langgraft: warning: {exc}; the console log was not written", file=sys.stderr)
        return None
    return folder / LOG
