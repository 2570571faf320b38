"""The packed-data cache: int32 `.npy` files every rank memory-maps, read back as the blocks packing made, and a
damaged cache tokenized again with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from langgraft.train.data import CACHE, Blocks, _pack_data, build_data, data_digest
from helpers import tiny_run


@pytest.fixture(scope="module")
def packed(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = tiny_run(tmp, data_dir, 60, 12)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    return cfg, tok, _pack_data(cfg, tok)


def test_the_cache_is_int32_memory_mapped_and_holds_the_packed_blocks(packed, tmp_path):
    cfg, tok, (blocks, val, summary) = packed
    train, got_val, got_summary = build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path)
    for name, want in (("train.npy", blocks), ("validation.npy", val[0])):
        mapped = np.load(tmp_path / CACHE / name, mmap_mode="r", allow_pickle=False)
        assert isinstance(mapped, np.memmap) and mapped.dtype == np.int32
        assert np.array_equal(mapped, want.numpy())
    assert isinstance(train, Blocks) and isinstance(train.array, np.memmap) and train.shape == tuple(blocks.shape)
    assert got_summary == summary and got_val[1] == val[1]
    idx = torch.tensor([3, 0, 3, len(train) - 1])
    for index in (idx, slice(1, 4)):  # what the loop and the evaluation ask for: int64 tensors, equal ids
        rows = train[index]
        assert rows.dtype == torch.long and torch.equal(rows, blocks[index])
    # the checksum a checkpoint records reads the file, and equals the in-memory blocks' (a resume compares them)
    assert data_digest(train, got_val) == data_digest(blocks, val)
    again = build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path)  # a second rank or a resume
    assert isinstance(again[0], Blocks) and np.array_equal(again[0].array, train.array)


@pytest.mark.parametrize("damage", ["truncated", "no_meta", "bad_meta", "int64", "flat", "no_validation"])
def test_a_damaged_cache_is_named_and_tokenized_again(packed, tmp_path, capsys, damage):
    cfg, tok, (blocks, val, _) = packed
    build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path)
    cache = tmp_path / CACHE
    if damage == "truncated":
        size = (cache / "train.npy").stat().st_size
        with (cache / "train.npy").open("r+b") as fh:
            fh.truncate(size - 40)
    elif damage == "no_meta":
        (cache / "cache.json").unlink()
    elif damage == "bad_meta":
        (cache / "cache.json").write_text(json.dumps({"key": 3}))
    elif damage == "int64":  # the right ids at the wrong width
        np.save(cache / "train.npy", blocks.numpy())
    elif damage == "flat":
        np.save(cache / "train.npy", blocks.numpy().astype(np.int32).ravel())
    else:
        (cache / "validation.npy").unlink()
    capsys.readouterr()
    train, got_val, _ = build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path)
    assert f"{cache} cannot be read safely" in capsys.readouterr().err
    assert torch.equal(train[torch.arange(len(train))], blocks) and torch.equal(got_val[0][0:len(got_val[0])], val[0])
    assert np.load(cache / "train.npy", mmap_mode="r").dtype == np.int32  # rebuilt in place
