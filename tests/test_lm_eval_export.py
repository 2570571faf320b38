"""`eval --export-lm-eval DIR`: langgraft's tasks as lm-evaluation-harness tasks with langgraft's own prompts;
where lm_eval is installed, the harness runs them and agrees with `langgraft eval` on the same model."""

from __future__ import annotations

import json

import pytest
import yaml

from langgraft.cli import main
from helpers import make_extended_model

TASKS = ["sst2", "bpc_en", "persian_headline"]


def test_tasks_are_written_as_lm_eval_yaml_with_langgraft_prompts(tmp_path, data_dir, capsys):
    out = tmp_path / "lm"
    assert main(["eval", "--tasks", *TASKS, "--limit", "6", "--data-root", str(data_dir),
                 "--export-lm-eval", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{t}.{x}" for t in TASKS for x in ("yaml", "jsonl")]
                                                           + ["langgraft.yaml"])
    assert yaml.safe_load((out / "langgraft.yaml").read_text())["task"] == [f"langgraft_{t}" for t in TASKS]
    sst2 = yaml.safe_load((out / "sst2.yaml").read_text())
    assert (sst2["output_type"], sst2["doc_to_text"], sst2["doc_to_choice"], sst2["doc_to_target"]) == \
        ("multiple_choice", "prompt", "choices", "gold")
    assert sst2["dataset_kwargs"]["data_files"]["test"] == str((out / "sst2.jsonl").resolve())
    docs = [json.loads(line) for line in (out / "sst2.jsonl").read_text().splitlines()]
    assert len(docs) == 6 and all(d["choices"] == [" negative", " positive"] and d["gold"] in (0, 1) for d in docs)
    assert docs[0]["prompt"].startswith("Review: ") and docs[0]["prompt"].endswith("\nSentiment:")
    assert yaml.safe_load((out / "bpc_en.yaml").read_text())["output_type"] == "loglikelihood_rolling"
    gen = yaml.safe_load((out / "persian_headline.yaml").read_text())
    assert gen["output_type"] == "generate_until" and gen["generation_kwargs"]["until"] == ["\n"]
    # a task that cannot be read writes nothing
    assert main(["eval", "--tasks", "sst2", str(tmp_path / "missing.yaml"), "--data-root", str(data_dir),
                 "--export-lm-eval", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_lm_eval_runs_the_exported_tasks_and_agrees_with_langgraft(tmp_path, data_dir):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    model = make_extended_model(tmp_path, data_dir)
    out = tmp_path / "lm"
    args = ["--limit", "8", "--data-root", str(data_dir)]
    assert main(["eval", "--tasks", "sst2", "bpc_en", *args, "--export-lm-eval", str(out)]) == 0
    ours = tmp_path / "ours"
    assert main(["eval", "--model", f"m={model}", "--tasks", "sst2", "bpc_en", *args, "--out", str(ours)]) == 0
    mine = json.loads((ours / "results.json").read_text())["results"]["m"]
    theirs = simple_evaluate(model="hf", model_args=f"pretrained={model},device=cpu,dtype=float32",
                             tasks=["langgraft"], task_manager=TaskManager(include_path=str(out)),
                             batch_size=4)["results"]
    assert theirs["langgraft_sst2"]["acc,none"] == pytest.approx(mine["sst2"]["acc"]["value"], abs=1e-9)
    assert theirs["langgraft_bpc_en"]["bits_per_byte,none"] == pytest.approx(mine["bpc_en"]["bpb"]["value"],
                                                                             rel=0.02)
