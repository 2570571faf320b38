"""Fault suite, second part (docs/RELIABILITY.md, "Files, processes and numbers"): concurrent and killed
writers, the data cache under the checkpoint checksums, resource bombs in GGUF files and chat templates, numbers
outside their range, and damaged input files. Each class is decided in one place and tried with several variants;
a failure is one `langgraft: error:` line, exit 2, and nothing of the user's touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from langgraft.cli import main
from langgraft.config import apply_override, from_dict, load_config
from langgraft.errors import UserError

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _one_line_error(capsys, *needles: str) -> str:
    """The CLI's stderr is exactly one `langgraft: error:` line holding every needle."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("langgraft: error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def _cli_status(argv: list[str]) -> int:
    """main()'s exit status, whether it returned it or argparse raised it."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


# ---------------------------------------------------------------- 8. numbers have ranges in the schema
def _train_cfg(*overrides: str):
    from langgraft.train.config import TrainConfig

    return load_config(TrainConfig, None, list(overrides))


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("optim.lr=0", "optim.lr"), ("optim.lr=.nan", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"), ("optim.embed_lr=-1e-3", "optim.embed_lr"), ("max_steps=-5", "max_steps"),
    ("epochs=0", "epochs"), ("lora.r=0", "lora.r"), ("lora.alpha=-8", "lora.alpha"),
    ("lora.dropout=1.5", "lora.dropout"), ("data.block_size=1", "data.block_size"),
    ("micro_batch_size=0", "micro_batch_size"), ("grad_accum=-1", "grad_accum"),
    ("optim.warmup_ratio=2", "optim.warmup_ratio"), ("data.replay_fraction=1", "data.replay_fraction"),
    ("log_every=0", "log_every"), ("checkpoint_every=-1", "checkpoint_every"), ("seed=-3", "seed"),
    ("optim.max_grad_norm=-1", "optim.max_grad_norm"), ("data.max_texts=-1", "data.max_texts"),
])
def test_train_numbers_out_of_range_are_one_line_naming_the_key(override, key):
    with pytest.raises(UserError, match=rf"{key} must be "):
        _train_cfg(override)


def test_train_numbers_in_range_still_load():
    cfg = _train_cfg("optim.lr=1e-5", "max_steps=0", "epochs=3", "lora.r=1", "optim.embed_lr=null",
                     "data.replay_fraction=0.5", "optim.warmup_ratio=1", "keep_checkpoints=0")
    assert (cfg.optim.lr, cfg.epochs, cfg.lora.r, cfg.optim.embed_lr) == (1e-5, 3, 1, None)


@pytest.mark.parametrize("where, value", [
    ("workers", 0), ("chunk_mb", -1), ("preview_records", -1), ("datasets.0.validation_fraction", 1.5),
    ("datasets.0.interleave_group", 0), ("datasets.0.filters.min_script_ratio", 1.5),
    ("datasets.0.filters.max_chars", 0), ("datasets.0.dedup.threshold", 0), ("datasets.0.dedup.num_perm", 0),
    ("datasets.0.sources.0.limit", -1), ("leak_guard.min_chars", -5),
])
def test_prepare_numbers_out_of_range(where, value):
    from langgraft.data.config import PrepareConfig

    raw: dict = {"datasets": [{"name": "fa", "sources": [{"path": "x.txt"}]}]}
    node, *path = raw, *where.split(".")
    for part in path[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[path[-1]] = value
    key = ".".join(p for p in where.split(".") if not p.isdigit()).split(".")[-1]
    with pytest.raises(UserError, match=rf"{key} must be "):
        from_dict(PrepareConfig, raw, source="data.yaml")


@pytest.mark.parametrize("override", ["eval.limit=-1", "eval.limit=0", "eval.batch_size=0", "tokenizer.threads=-4",
                                      "tokenizer.vocab_size=0", "eval.shots=-1", "model_extend.seed=-1",
                                      "eval.max_new_tokens=0"])
def test_recipe_numbers_out_of_range(override):
    from langgraft.pipeline.recipe import Recipe

    with pytest.raises(UserError, match=rf"{override.split('=')[0]} must be "):
        load_config(Recipe, None, [override])


@pytest.mark.parametrize("change", [{"shots": -1}, {"max_new_tokens": 0}, {"max_chars": -2}, {"seed": -1}])
def test_task_numbers_out_of_range(change):
    from langgraft.eval.tasks import TaskSpec

    raw = {"name": "t", "lang": "fa", "kind": "generate", "data": {"path": "x.jsonl"}, "metrics": ["exact"],
           **change}
    with pytest.raises(UserError, match=rf"{next(iter(change))} must be "):
        from_dict(TaskSpec, raw, source="task t.yaml")


@pytest.mark.parametrize("argv, flag", [
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--limit", "-1"], "--limit"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--limit", "0"], "--limit"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--shots", "-2"], "--shots"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--repetition-penalty", "-1"], "--repetition-penalty"),
    (["tokenizer", "train", "--input", "a.txt", "--lang", "fa", "--vocab-size", "100", "--out", "o",
      "--threads", "-4"], "--threads"),
    (["tokenizer", "train", "--input", "a.txt", "--lang", "fa", "--vocab-size", "-100", "--out", "o"],
     "--vocab-size"),
    (["tokenizer", "train", "--input", "a.txt", "--lang", "fa", "--vocab-size", "100", "--out", "o",
      "--max-sentences", "0"], "--max-sentences"),
    (["generate", "--model", "m", "--input", "i.jsonl", "--out", "o.jsonl", "--batch-size", "-1"], "--batch-size"),
    (["extend", "--model", "m", "--tokenizer", "t", "--out", "o", "--seed", "-1"], "--seed"),
    (["tokenizer", "report", "--tokenizer", "a=b", "--text", "fa=t.txt", "--out", "o", "--sweep", "100,-5"],
     "--sweep"),
])
def test_cli_flags_out_of_range_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, argv, flag):
    monkeypatch.chdir(tmp_path)
    assert _cli_status(argv) == 2
    _one_line_error(capsys, flag)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("override", ["optim.lr=-1", "max_steps=-5", "epochs=0", "lora.r=0"])
def test_train_cli_refuses_bad_numbers_before_any_folder(tmp_path, capsys, override):
    out = tmp_path / "run"
    assert main(["train", "--stage", "align", override, "--out", str(out)]) == 2
    _one_line_error(capsys, override.split("=")[0])
    assert not out.exists()
