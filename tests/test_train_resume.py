"""A run SIGKILLed mid-training and resumed with --resume ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from langgraft.config import to_dict
from langgraft.train.checkpoint import list_checkpoints
from langgraft.train.stages import train
from helpers import tiny_run


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, data_dir):
    cfg = tiny_run(tmp_path, data_dir, 100, 20, grad_accum=2, max_steps=30, checkpoint_every=4, keep_checkpoints=2,
                   eval_every=10, eval_batches=1, lora={"dropout": 0.1}, optim={"embed_lr": 1e-3, "warmup_ratio": 0.2})
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "langgraft", "train", "--stage", "pretrain", "--config",
                             str(config_file), "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.name >= "step-00000008" for p in list_checkpoints(killed / "checkpoints")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "manifest.json").exists()
    resumed_from = list_checkpoints(killed / "checkpoints")[-1].name
    # the resume maps the packed data (int32, never unpickled) instead of re-tokenizing
    for name in ("train.npy", "validation.npy"):
        mapped = np.load(killed / "packed-data" / name, mmap_mode="r", allow_pickle=False)
        assert isinstance(mapped, np.memmap) and mapped.dtype == np.int32 and mapped.shape[1] == 16
    assert "step-00000008" <= resumed_from < "step-00000030"

    summary = train("pretrain", cfg, out=killed, resume=True)
    assert not (killed / "packed-data").exists()  # removed once the run is finished
    whole = train("pretrain", cfg, out=tmp_path / "whole")
    assert summary["steps"] == whole["steps"] == 30
    a = load_file(killed / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    steps = [line for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines())
