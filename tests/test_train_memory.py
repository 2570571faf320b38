"""The peak-memory estimate of a training stage: printed before training and by `train --stage S --show-config`,
read from the model folder's own config.json, and moving the right way with each setting that changes memory."""

from __future__ import annotations

import dataclasses
import re

import pytest
from helpers import make_extended_model, tiny_run

from langgraft.cli import main
from langgraft.train.config import TrainConfig
from langgraft.train.memory import estimate_peak, read_shape
from langgraft.train.stages import train


@pytest.fixture(scope="module")
def extended(tmp_path_factory, data_dir):
    return make_extended_model(tmp_path_factory.mktemp("mem"), data_dir)


def _gib(text: str) -> float:
    return float(re.search(r"estimated peak host memory: ([\d.]+) GiB", text).group(1))


def test_show_config_after_stage_prints_the_estimate_for_that_config(extended, capsys):
    for micro in (4, 64):
        with pytest.raises(SystemExit) as stop:
            main(["train", "--stage", "pretrain", f"model={extended}", f"micro_batch_size={micro}", "--show-config"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert f"micro-batch {micro} x 512 tokens" in out, out
    with pytest.raises(SystemExit):
        main(["train", "--stage", "pretrain", "model=/nonexistent/model", "--show-config"])
    assert "no memory estimate (/nonexistent/model)" in capsys.readouterr().out


def test_estimate_moves_with_every_setting_that_changes_memory(extended):
    shape = read_shape(extended)
    base = dataclasses.replace(TrainConfig(model=str(extended)), micro_batch_size=4)

    def est(cfg, *, stage="pretrain", rows=40, bf16=True):
        return estimate_peak(shape, cfg, stage=stage, rows=rows, bf16=bf16)

    one = est(base)
    assert one["total"] == sum(v for k, v in one.items() if k != "total")
    double = est(dataclasses.replace(base, micro_batch_size=8))
    assert double["activations"] == 2 * one["activations"]
    ckpt = est(dataclasses.replace(base, gradient_checkpointing=True))
    assert ckpt["activations"] < one["activations"] and ckpt["total"] < one["total"]
    assert est(base, rows=shape.vocab)["trained + grads + AdamW"] > one["trained + grads + AdamW"]
    assert est(base, bf16=False)["activations"] > one["activations"]
    assert est(base, stage="align")["trained + grads + AdamW"] < one["trained + grads + AdamW"]  # no LoRA


def test_training_prints_the_estimate_before_the_first_step(tmp_path, data_dir, capsys):
    cfg = tiny_run(tmp_path, data_dir, 8, 2, max_steps=1, checkpoint_every=0, gradient_checkpointing=True)
    train("pretrain", cfg, out=tmp_path / "run")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert _gib(text) > 0 and "fp32, activation checkpointing on" in text, text
    assert text.index("estimated peak") < text.index("tokenizing")  # before the data, the model, the first step
