"""Evaluation and generation on every process of a launch: 2 CPU ranks (gloo) each score (generate) a share of the
examples (prompts) and rank 0 writes what one process writes; a model spread by `--device auto` scores as it does
on one device."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from helpers import load_base_tokenizer, persian_lines, save_tiny_model

from langgraft.cli import main

TASKS = ["sst2", "ntrex_en_fa", "bpc_fa_ntrex"]  # one of each kind: choice, generation, text log-likelihood


@pytest.fixture(scope="module")
def model(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranks-model")
    return save_tiny_model("llama", load_base_tokenizer(data_dir, "llama2", tmp / "tok"), tmp / "m", seed=0,
                           hidden=16, layers=1)


def _eval_args(model, out, *extra: str) -> list[str]:
    return ["eval", "--model", f"tiny={model}", "--tasks", *TASKS, "--limit", "4", "--max-new-tokens", "3",
            "--batch-size", "2", "--out", str(out), *extra]


def _generate_args(model, inp, out) -> list[str]:
    return ["generate", "--model", str(model), "--input", str(inp), "--out", str(out), "--max-new-tokens", "4",
            "--batch-size", "2"]


def _rank(rank: int, world: int, port: int, commands: list[list[str]], report: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from langgraft.eval.shard import launch_group

    group = launch_group()
    # which rank computed which item: each its strided share, every rank the whole list in order
    shares = group.map(lambda part: [(group.rank, x) for x in part], list(range(7)))
    codes = [main(args) for args in commands]
    with open(f"{report}.{rank}", "w") as fh:
        json.dump({"codes": codes, "shares": shares}, fh)


def _samples(out) -> dict:
    return {t: [json.loads(line) for line in (out / "samples" / f"{t}.jsonl").read_text().splitlines()]
            for t in TASKS}


def test_two_ranks_score_shares_and_rank_0_writes_the_one_process_results(model, tmp_path, data_dir):
    inp = tmp_path / "prompts.jsonl"  # 7 prompts and a line without one: an odd count, a skipped line
    lines = [json.dumps({"prompt": t, "id": k}, ensure_ascii=False) for k, t in enumerate(persian_lines(data_dir, 7))]
    inp.write_text("\n".join(lines[:3] + ['{"text": "no prompt"}'] + lines[3:]) + "\n", encoding="utf-8")
    assert main(_eval_args(model, tmp_path / "one")) == 0
    assert main(_generate_args(model, inp, tmp_path / "one.jsonl")) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    commands = [_eval_args(model, tmp_path / "two"), _generate_args(model, inp, tmp_path / "two.jsonl")]
    mp.spawn(_rank, args=(2, port, commands, str(tmp_path / "report")), nprocs=2)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"report.{rank}").read_text())
        assert got["codes"] == [0, 0]
        assert got["shares"] == [[k % 2, k] for k in range(7)]
    # greedy generations: the same lines, in input order, as one process wrote (fp32: batch-independent)
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["summary"]["ranks"] == 2
    one, two = _samples(tmp_path / "one"), _samples(tmp_path / "two")
    for task in TASKS:
        assert [r["id"] for r in two[task]] == [r["id"] for r in one[task]] and len(one[task]) == 4
        for a, b in zip(one[task], two[task]):
            for key in ("prediction", "pred", "tokens", "chars"):
                assert a.get(key) == b.get(key), (task, key)
            for key in ("logliks", "nll"):
                if key in a:
                    assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (task, key)
            assert a["stats"].keys() == b["stats"].keys()
            for metric in a["stats"]:
                assert b["stats"][metric] == pytest.approx(a["stats"][metric], rel=1e-5, abs=1e-5), (task, metric)


def test_device_auto_spreads_the_model_and_scores_alike(model, tmp_path):
    assert main(_eval_args(model, tmp_path / "cpu", "--device", "cpu")) == 0
    assert main(_eval_args(model, tmp_path / "auto", "--device", "auto")) == 0
    cpu, auto = _samples(tmp_path / "cpu"), _samples(tmp_path / "auto")
    for task in TASKS:
        for a, b in zip(cpu[task], auto[task]):
            assert a.get("prediction") == b.get("prediction")
            for key in ("logliks", "nll"):
                if key in a:
                    assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (task, key)


def test_device_auto_under_a_launcher_is_one_line(model, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    from langgraft.model.load import load_model

    with pytest.raises(Exception, match="--device auto spreads one model over every device"):
        load_model(str(model), "auto")
