"""Give the memory a finished step of `langgraft run` freed back to the system before the next step allocates.

One process runs every stage of a recipe. Two things kept an earlier step's memory resident into the next one:
models left in reference cycles (PEFT wrappers and module hooks hold some) wait for Python's cycle collector, and
glibc keeps freed heap pages resident (its trim threshold rises with the largest block freed, so a training step's
activations stay mapped). The run's highest point was a training stage's export loading the parent model while
the trained model still held its memory; evaluation and the report ran on top of the training heap. A training
step's own peak is not lowered (it reuses freed heap either way). No library exposes `malloc_trim`; it is one call
through ctypes, and a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def release_memory() -> None:
    """Collect reference cycles, then return free heap pages to the system (glibc's `malloc_trim(0)`)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None
