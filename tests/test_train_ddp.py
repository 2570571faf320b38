"""2-process training on CPU (gloo): DDP through `torchrun`, FSDP2 and ZeRO-2 through `accelerate launch` of the
shipped recipes/accelerate/fsdp.yaml and zero2.yaml. Each run is SIGKILLed on every rank after a checkpoint, resumed
with --resume, and must end with the adapter of an uninterrupted DDP run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from langgraft.config import to_dict
from langgraft.train.checkpoint import list_checkpoints
from helpers import alive, descendants, tiny_run

REPO = Path(__file__).resolve().parents[1]
STEPS = 12
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _command(engine: str, tmp: Path, out: Path, resume: bool) -> list[str]:
    bin_dir = os.path.dirname(sys.executable)
    if engine == "ddp":
        launch = [shutil.which("torchrun", path=bin_dir) or "torchrun", "--nproc_per_node", "2", "--master_port",
                  _free_port()]
    else:
        config = {"fsdp": "fsdp.yaml", "zero2": "zero2.yaml"}[engine]
        launch = [shutil.which("accelerate", path=bin_dir) or "accelerate", "launch", "--config_file",
                  str(REPO / "recipes/accelerate" / config), "--num_processes", "2", "--mixed_precision", "no",
                  "--main_process_port", _free_port()]
    return [*launch, "-m", "langgraft", "train", "--stage", "pretrain", "--config", str(tmp / "cfg.yaml"), "--out",
            str(out), *(["--resume"] if resume else [])]


def _run(engine: str, tmp: Path, out: Path, resume: bool = False) -> dict:
    proc = subprocess.run(_command(engine, tmp, out, resume), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"wrote {out}:") == 1  # the main process says it, not every rank
    return json.loads((out / "manifest.json").read_text())["summary"]


def _kill_after_checkpoint(engine: str, tmp: Path, out: Path) -> str:
    """Start a run, SIGKILL the launcher and every rank once a checkpoint is written; the checkpoint resumed from."""
    proc = subprocess.Popen(_command(engine, tmp, out, False), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list_checkpoints(out / "checkpoints"):
        time.sleep(0.01)
    ranks = descendants(proc.pid)
    for pid in [*ranks, proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    deadline = time.time() + 30
    while time.time() < deadline and any(map(alive, ranks)):
        time.sleep(0.05)
    assert not any(map(alive, ranks)) and not (out / "manifest.json").exists()
    resumed_from = list_checkpoints(out / "checkpoints")[-1].name
    assert f"step-{4:08d}" <= resumed_from < f"step-{STEPS:08d}"
    return resumed_from


def _assert_same_adapter(a: Path, b: Path) -> None:
    x, y = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(b / "adapter" / "adapter_model.safetensors")
    assert x.keys() == y.keys() and any("lora_B" in k for k in x) and any("trainable_tokens" in k for k in x)
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("ranks")
    cfg = tiny_run(tmp, data_dir, 100, 20, grad_accum=2, max_steps=STEPS, checkpoint_every=4, keep_checkpoints=2,
                   eval_every=6, eval_batches=3, lora={"dropout": 0.1}, optim={"embed_lr": 1e-3, "warmup_ratio": 0.2})
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    # eval_batches 3 on 2 ranks: one rank scores a batch more (sharded, the other runs one it leaves out)
    return tmp, _run("ddp", tmp, tmp / "ddp-whole")


def test_ddp_killed_on_every_rank_resumes_to_the_uninterrupted_run(setup):
    tmp, whole = setup
    assert whole["world_size"] == 2 and whole["rank_checksums"][0] == whole["rank_checksums"][1]
    assert whole["tokens"] == STEPS * 2 * 2 * 2 * 16  # steps × micro-batch × accumulation × ranks × block
    _kill_after_checkpoint("ddp", tmp, tmp / "ddp-killed")
    resumed = _run("ddp", tmp, tmp / "ddp-killed", resume=True)
    assert resumed["rank_checksums"] == whole["rank_checksums"] and resumed["val_loss"] == whole["val_loss"]
    _assert_same_adapter(tmp / "ddp-killed", tmp / "ddp-whole")
    lines = (tmp / "ddp-killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp / "ddp-whole" / "metrics.jsonl").read_text().splitlines())


def test_fsdp2_killed_on_every_rank_resumes_to_the_ddp_run(setup):
    tmp, whole = setup
    out = tmp / "fsdp-killed"
    name = _kill_after_checkpoint("fsdp", tmp, out)
    # the checkpoint holds the trained parameters only, whole (gathered), not one rank's slice of them
    state = torch.load(out / "checkpoints" / name / "state.pt", weights_only=True)
    adapter = load_file(out / "checkpoints" / name / "adapter" / "adapter_model.safetensors")
    assert len(state["model"]) == len(adapter) and set(state["optimizer"]["state"]) == set(state["model"])
    rows = [v for k, v in state["model"].items() if "embed_tokens" in k and "trainable_tokens_delta" in k]
    assert len(rows) == 1 and rows[0].shape == (20, 32)
    resumed = _run("fsdp", tmp, out, resume=True)
    # sharded: each rank holds a different slice of the trained weights, whose sums add up to DDP's
    assert resumed["world_size"] == 2 and resumed["rank_checksums"][0] != resumed["rank_checksums"][1]
    assert sum(resumed["rank_checksums"]) == pytest.approx(whole["rank_checksums"][0], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)
    _assert_same_adapter(out, tmp / "ddp-whole")


def test_zero2_killed_on_every_rank_resumes_to_the_ddp_run(setup):
    tmp, whole = setup
    out = tmp / "zero2-killed"
    name = _kill_after_checkpoint("zero2", tmp, out)
    # langgraft's part holds the trained weights whole; DeepSpeed's part each rank's optimizer partition
    folder = out / "checkpoints" / name
    state = torch.load(folder / "state.pt", weights_only=True)
    adapter = load_file(folder / "adapter" / "adapter_model.safetensors")
    assert len(state["model"]) == len(adapter) and state["optimizer"] == {}
    optim_parts = sorted(p.name for p in (folder / "zero").iterdir() if "optim_states" in p.name)
    assert len(optim_parts) == 2
    resumed = _run("zero2", tmp, out, resume=True)
    # weights are replicated under ZeRO-2: both ranks end equal, and equal to DDP's
    assert resumed["world_size"] == 2 and resumed["rank_checksums"][0] == resumed["rank_checksums"][1]
    assert resumed["rank_checksums"][0] == pytest.approx(whole["rank_checksums"][0], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)
    _assert_same_adapter(out, tmp / "ddp-whole")
