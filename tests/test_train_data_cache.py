"""The packed-data cache: int32 `.npy` files every rank memory-maps, read back as the blocks packing made, the same
bytes from any number of tokenizing workers, and a damaged cache tokenized again with one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from langgraft.train.data import CACHE, Blocks, build_data, data_digest, iter_texts
from langgraft.train.tokenize import write_blocks
from helpers import TOKENIZERS, english_lines, load_base_tokenizer, make_extended_tokenizer, news_texts, tiny_run


def reference_blocks(texts, tok, block_size: int) -> torch.Tensor:
    """Packing spelled out: each non-empty text's ids on its own, then EOS, one stream cut into blocks."""
    stream = []
    for text in texts:
        if text:
            stream += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(stream) // block_size
    return torch.tensor(stream[:n * block_size]).view(n, block_size)


@pytest.fixture(scope="module")
def packed(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = tiny_run(tmp, data_dir, 60, 12)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    val_texts = list(iter_texts(cfg.data.dataset, "validation"))
    chars_per_token = sum(map(len, val_texts)) / sum(len(ids) + 1 for ids in tok(val_texts, add_special_tokens=False)["input_ids"])
    blocks = reference_blocks(iter_texts(cfg.data.dataset, "train"), tok, 16)
    summary = {"train_texts": 60, "train_blocks": len(blocks)}
    return cfg, tok, (blocks, (reference_blocks(val_texts, tok, 16), chars_per_token), summary)


def test_the_cache_is_int32_memory_mapped_and_holds_the_packed_blocks(packed, tmp_path):
    cfg, tok, (blocks, val, summary) = packed
    train, got_val, got_summary = build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path)
    for name, want in (("train.npy", blocks), ("validation.npy", val[0])):
        mapped = np.load(tmp_path / CACHE / name, mmap_mode="r", allow_pickle=False)
        assert isinstance(mapped, np.memmap) and mapped.dtype == np.int32
        assert np.array_equal(mapped, want.numpy())
    assert isinstance(train, Blocks) and isinstance(train.array, np.memmap) and train.shape == tuple(blocks.shape)
    assert got_summary.items() >= summary.items() and got_val[1] == pytest.approx(val[1], rel=1e-12)
    idx = torch.tensor([3, 0, 3, len(train) - 1])
    for index in (idx, slice(1, 4), slice(None, None, 3), -1, 2, np.array([[1, 0], [2, -2]])):
        rows = train[index]  # what the loop and the evaluation ask for (and more): int64 tensors, equal ids
        want = blocks[torch.as_tensor(index)] if isinstance(index, np.ndarray) else blocks[index]
        assert rows.dtype == torch.long and torch.equal(rows, want)
    with pytest.raises(IndexError):
        train[len(train)]
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


def test_tokenizing_workers_write_the_bytes_one_worker_writes(packed, tmp_path):
    cfg, tok, (blocks, _, _) = packed
    texts = list(iter_texts(cfg.data.dataset, "train"))
    texts = texts[:25] + [""] + texts[25:]  # an empty document is skipped by every worker count alike
    got = {}
    for workers in (1, 2):
        path = tmp_path / f"w{workers}.npy"
        # chunks of 7 documents: several chunks in flight on each worker, joined back in order
        done = write_blocks(texts, tok, 16, path, workers=workers, chunk=7)
        got[workers] = path.read_bytes()
        assert (done.texts, done.blocks) == (60, len(blocks))
    assert got[1] == got[2]
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "w2.npy").astype(np.int64)), blocks)


def test_a_run_with_tokenizing_workers_caches_the_same_blocks(packed, tmp_path):
    cfg, tok, _ = packed
    one = build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path / "one")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=2))
    two = build_data("pretrain", cfg, tok, Accelerator(cpu=True), tmp_path / "two")
    for name in ("train.npy", "validation.npy", "cache.json"):
        assert (tmp_path / "one" / CACHE / name).read_bytes() == (tmp_path / "two" / CACHE / name).read_bytes()
    assert data_digest(one[0], one[1]) == data_digest(two[0], two[1])


@pytest.mark.parametrize("name", [*TOKENIZERS, "extended-qwen2", "truncating", "splitting-special"])
def test_the_cache_holds_each_documents_ids_from_the_tokenizers_own_call(name, data_dir, tmp_path):
    """The ids written are the ones `tokenizer(text, add_special_tokens=False)` gives, whichever encoding path the
    cache takes (the backend's offset-free batch call, or the wrapper): real base tokenizers (SentencePiece,
    byte-level BPE), a grafted one with added tokens, and backends left truncating or splitting special tokens."""
    if name == "extended-qwen2":
        tok = AutoTokenizer.from_pretrained(make_extended_tokenizer(data_dir, "qwen2", tmp_path / "ext"))
    else:
        tok = load_base_tokenizer(data_dir, name if name in TOKENIZERS else "mistral", tmp_path / "base")
    texts = news_texts(data_dir, n=6) + english_lines(data_dir, 30) + ["", "  ", "a </s> <s> <|im_end|> b"]
    tok.split_special_tokens = name == "splitting-special"
    expected = reference_blocks(texts, tok, 8)
    # state an earlier call may leave on the backend, which a plain call of the wrapper resets
    if name == "truncating":
        tok.backend_tokenizer.enable_truncation(5)
    if name == "splitting-special":
        tok.backend_tokenizer.encode_special_tokens = False
    done = write_blocks(texts, tok, 8, tmp_path / "blocks.npy")
    assert done.blocks == len(expected) > 100
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "blocks.npy").astype(np.int64)), expected)
