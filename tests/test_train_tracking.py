"""`report_to`: metrics go to experiment trackers through Accelerate, under the HF Trainer's tag names, with every
optimizer group's learning rate; checked on TensorBoard, which runs offline (W&B, trackio and MLflow go the same
way through Accelerate and need their own packages)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from langgraft.cli import main
from langgraft.errors import UserError
from langgraft.train.stages import train
from helpers import tiny_run


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def test_learning_rates_and_losses_reach_tensorboard_under_hf_tags(tmp_path, data_dir):
    pytest.importorskip("tensorboard")
    cfg = tiny_run(tmp_path, data_dir, 40, 8, max_steps=4, checkpoint_every=0, eval_every=2, log_every=1,
                   report_to=["tensorboard"], optim={"lr": 1e-3, "embed_lr": 5e-3, "warmup_ratio": 0.5})
    train("pretrain", cfg, out=tmp_path / "run")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(tmp_path / "run" / "tensorboard")
    for tag in ("train/loss", "train/learning_rate", "train/learning_rate/embeddings", "train/learning_rate/lora",
                "train/grad_norm", "eval/loss", "eval/bits_per_character"):
        assert tag in scalars, (tag, sorted(scalars))
    by_step = {m["step"]: m for m in metrics}
    assert [s for s, _ in scalars["train/learning_rate/lora"]] == [1, 2, 3, 4]
    for step, value in scalars["train/learning_rate/embeddings"]:
        assert value == pytest.approx(by_step[step]["lr"][0], rel=1e-6)  # the rows' group: embed_lr's schedule
    for step, value in scalars["train/learning_rate"]:
        assert value == pytest.approx(by_step[step]["lr"][1], rel=1e-6)  # the Trainer's one rate: optim.lr's
    assert {v for _, v in scalars["train/learning_rate/embeddings"]} != {v for _, v in scalars["train/learning_rate"]}
    for step, value in scalars["train/loss"]:
        assert value == pytest.approx(by_step[step]["loss"], rel=1e-6)


def test_no_tracker_and_bad_trackers(tmp_path, data_dir, capsys):
    cfg = tiny_run(tmp_path, data_dir, 40, 8, max_steps=1, checkpoint_every=0, eval_every=0, report_to=[])
    train("align", cfg, out=tmp_path / "quiet")
    assert not (tmp_path / "quiet" / "tensorboard").exists()
    with pytest.raises(UserError, match="report_to: unknown tracker 'tensorbord'"):
        train("align", tiny_run(tmp_path / "b", data_dir, 40, 8, max_steps=1, report_to=["tensorbord"]),
              out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    missing = next(n for n in ("wandb", "trackio", "mlflow") if __import__("importlib").util.find_spec(n) is None)
    capsys.readouterr()
    assert main(["train", "--stage", "align", "--out", str(tmp_path / "m"), f"report_to=[{missing}]",
                 f"model={cfg.model}", f"data.dataset={cfg.data.dataset}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"langgraft: error: report_to: {missing} is not installed here (pip install {missing})"


def test_where_metrics_go_is_not_part_of_the_runs_identity(tmp_path, data_dir):
    cfg = tiny_run(tmp_path, data_dir, 40, 8, max_steps=1, checkpoint_every=0, eval_every=0, report_to=[])
    first = train("align", cfg, out=tmp_path / "run")
    again = train("align", dataclasses.replace(cfg, report_to=["tensorboard"]), out=tmp_path / "run")
    assert again.skipped and again.summary == first.summary  # the finished run is returned as it is, not retrained
