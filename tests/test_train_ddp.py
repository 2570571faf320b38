"""2-process DDP on CPU (gloo) through `torchrun`: both ranks train on different shards and end identical."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import yaml

from langgraft.config import to_dict
from helpers import tiny_run


def test_torchrun_two_ranks_agree(tmp_path, data_dir):
    cfg = tiny_run(tmp_path, data_dir, 70, 10, max_steps=4, checkpoint_every=2, eval_every=4, eval_batches=2,
                   optim={"embed_lr": 1e-3})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", port, "-m", "langgraft", "train",
                           "--stage", "pretrain", "--config", str(tmp_path / "cfg.yaml"), "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "manifest.json").read_text())["summary"]
    assert summary["world_size"] == 2 and len(summary["rank_checksums"]) == 2
    assert summary["rank_checksums"][0] == summary["rank_checksums"][1]
    assert summary["tokens"] == 4 * 2 * 2 * 16  # steps × micro-batch × ranks × block: each rank its own shard
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert summary["val_loss"] > 0
