"""`langgraft run` hands each finished step's memory back before the next one allocates (`pipeline.heap`): freed
heap pages glibc kept resident, and models left in reference cycles."""

from __future__ import annotations

import gc
import sys

import pytest
import torch

from langgraft.pipeline.heap import release_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")

MB = 1 << 20


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize("block", [16 << 10, 64 << 10, 100 << 10])
def test_freed_heap_pages_are_returned_to_the_system(block):
    """Blocks below glibc's mmap threshold come from the heap; one block kept above them stops glibc trimming the
    heap's top, so after they are freed their pages stay resident until release_memory."""
    blocks = [bytearray(block) for _ in range(160 * MB // block)]
    for b in blocks:  # touch every page
        b[::4096] = b"\x01" * len(b[::4096])
    pin = bytearray(block)
    before = _rss()
    del blocks
    kept = _rss()
    release_memory()
    after = _rss()
    assert kept > after + 100 * MB, (before, kept, after)
    del pin


@pytest.mark.parametrize("size", [40 * MB, 200 * MB])
def test_a_model_left_in_a_reference_cycle_is_freed(size):
    enabled = gc.isenabled()
    gc.disable()  # so only release_memory collects
    try:
        holder = {"tensor": torch.ones(size // 4), "module": torch.nn.Linear(4, 4)}
        holder["self"] = holder  # a cycle, as module hooks and PEFT wrappers make
        del holder
        kept = _rss()
        release_memory()
        assert kept - _rss() > 0.7 * size
    finally:
        if enabled:
            gc.enable()
