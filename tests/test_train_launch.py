"""A launch configuration langgraft cannot honour (FSDP or ZeRO where they cannot run, or a sharded launch that
Accelerate would quietly turn into plain data parallel) is one line and a non-zero exit before any work."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from langgraft.config import to_dict
from langgraft.errors import UserError
from langgraft.train.stages import check_launch, train
from helpers import tiny_run

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal needs a machine without CUDA")


@pytest.fixture(scope="module")
def launch_setup(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("launch")
    cfg = tiny_run(tmp, data_dir, 30, 5, max_steps=2)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    return tmp, cfg


@NO_CUDA
@pytest.mark.parametrize("env, said", [
    ({"ACCELERATE_USE_FSDP": "true"}, r"asks for FSDP \(ACCELERATE_USE_FSDP=true\), which needs CUDA GPUs"),
    ({"ACCELERATE_USE_FSDP": "True", "ACCELERATE_USE_CPU": "true"}, r"asks for FSDP .* needs CUDA GPUs"),
    ({"ACCELERATE_USE_FSDP": "1", "FSDP_VERSION": "2"}, r"asks for FSDP .* needs CUDA GPUs"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, r"asks for ZeRO \(DeepSpeed\) .*deepspeed is not installed"
     if importlib.util.find_spec("deepspeed") is None else "needs CUDA GPUs"),
])
def test_an_engine_this_machine_cannot_run_is_refused_before_any_work(launch_setup, tmp_path, monkeypatch, env,
                                                                      said):
    _, cfg = launch_setup
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=said):
        train("pretrain", cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_sharded_launch_resolved_to_plain_data_parallel_is_refused(monkeypatch):
    for resolved in ("MULTI_GPU", "MULTI_CPU", "NO"):  # what Accelerate falls back to when FSDP cannot be set up
        with pytest.raises(UserError, match=f"asks for FSDP .* resolved this launch to {resolved}"):
            check_launch("FSDP", resolved)
    with pytest.raises(UserError, match="asks for ZeRO .* resolved this launch to MULTI_GPU"):
        check_launch("DEEPSPEED", "MULTI_GPU")
    assert check_launch("FSDP", "FSDP") == "FSDP" and check_launch("DEEPSPEED", "DEEPSPEED") == "DEEPSPEED"
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert check_launch() is None  # a plain launch (or none) asks for nothing to check


@NO_CUDA
def test_accelerate_launch_of_the_shipped_fsdp_recipe_on_cpu_is_one_line(launch_setup):
    tmp, _ = launch_setup
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([accelerate, "launch", "--config_file", str(REPO / "recipes/accelerate/fsdp.yaml"),
                           "--num_processes", "1", "-m", "langgraft", "train", "--stage", "pretrain", "--config",
                           str(tmp / "cfg.yaml"), "--out", str(tmp / "run")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("langgraft:")]
    assert len(ours) == 1 and "asks for FSDP (ACCELERATE_USE_FSDP=true), which needs CUDA GPUs" in ours[0], \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr.split("langgraft: error:")[0]  # no traceback of langgraft's own
    assert "tokenizing" not in proc.stderr and not (tmp / "run").exists()
