"""A launch configuration langgraft cannot honour (an FSDP setting it does not implement, FSDP without a process
group to shard over, ZeRO without deepspeed, ZeRO-3) is one line and a non-zero exit before any work."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from langgraft.config import to_dict
from langgraft.errors import UserError
from langgraft.train.sharding import check_launch
from langgraft.train.stages import train
from helpers import tiny_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def launch_setup(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("launch")
    cfg = tiny_run(tmp, data_dir, 30, 5, max_steps=2)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    return tmp, cfg


@pytest.mark.parametrize("env, said", [
    ({"ACCELERATE_USE_FSDP": "true"}, r"fsdp_config.fsdp_version: 1; langgraft shards with FSDP2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_ACTIVATION_CHECKPOINTING": "true"},
     r"fsdp_config.fsdp_activation_checkpointing: true; .*gradient_checkpointing"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "SHARD_GRAD_OP"},
     r"fsdp_config.fsdp_reshard_after_forward: shard_grad_op; FSDP2 takes true or false"),
    # no launcher: nothing to shard over, and Accelerate would quietly train on one device
    ({"ACCELERATE_USE_FSDP": "1", "FSDP_VERSION": "2"}, r"asks for FSDP .* resolved this launch to NO"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "NO_DEEPSPEED": "1"},
     r"asks for ZeRO \(DeepSpeed\) .*deepspeed is not installed"),
    # ZeRO-3 keeps the head and the trained rows partitioned, where the fused loss reads them
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     r"deepspeed_config.zero_stage: 3 is not supported .*fsdp.yaml"),
])
def test_a_launch_this_run_cannot_honour_is_refused_before_any_work(launch_setup, tmp_path, monkeypatch, env, said):
    _, cfg = launch_setup
    env = dict(env)
    if env.pop("NO_DEEPSPEED", None):  # as on a machine without it (the test extra installs it)
        found = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "deepspeed" else found(name, *a))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=said):
        train("pretrain", cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_sharded_launch_resolved_to_no_process_group_is_refused(monkeypatch):
    for resolved in ("NO", "XLA"):  # FSDP shards over the data-parallel process group, which these lack
        with pytest.raises(UserError, match=f"asks for FSDP .* resolved this launch to {resolved}"):
            check_launch("FSDP", resolved)
    with pytest.raises(UserError, match="asks for ZeRO .* resolved this launch to MULTI_GPU"):
        check_launch("DEEPSPEED", "MULTI_GPU")
    assert check_launch("FSDP", "MULTI_CPU") == check_launch("FSDP", "MULTI_GPU") == "FSDP"
    assert check_launch("DEEPSPEED", "DEEPSPEED") == "DEEPSPEED"
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert check_launch() is None  # a plain launch (or none) asks for nothing to check


def test_accelerate_launch_of_an_fsdp1_config_is_one_line(launch_setup):
    tmp, _ = launch_setup
    fsdp1 = yaml.safe_load((REPO / "recipes/accelerate/fsdp.yaml").read_text())
    fsdp1["fsdp_config"]["fsdp_version"] = 1
    (tmp / "fsdp1.yaml").write_text(yaml.safe_dump(fsdp1))
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([accelerate, "launch", "--config_file", str(tmp / "fsdp1.yaml"), "--num_processes", "1",
                           "-m", "langgraft", "train", "--stage", "pretrain", "--config", str(tmp / "cfg.yaml"),
                           "--out", str(tmp / "run")], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("langgraft:")]
    assert len(ours) == 1 and "fsdp_config.fsdp_version: 1; langgraft shards with FSDP2" in ours[0], \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr.split("langgraft: error:")[0]  # no traceback of langgraft's own
    assert "tokenizing" not in proc.stderr and not (tmp / "run").exists()
