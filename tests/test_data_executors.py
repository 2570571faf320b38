"""`data prepare`'s executor from the config: the Slurm job chain (built without a cluster, then submitted to an
`sbatch` stand-in that records what it is given), Ray without ray installed, unknown settings."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest
from datatrove.executor import LocalPipelineExecutor
from test_data_prepare import _config, _mono_inputs, _write

from langgraft.cli import main
from langgraft.config import load_config
from langgraft.data.config import PrepareConfig
from langgraft.data.executors import slurm_chain
from langgraft.data.prepare import cluster_stages

STAGES = ["A-clean", "B-find", "C-exact", "D-buckets", "E-cluster", "F-write"]
SLURM = {"partition": "cpu", "time": "01:00:00", "venv_path": "/shared/venv/bin/activate", "job_name": "lg",
         "sbatch_args": {"account": "proj7"}}


def test_the_slurm_chain_is_built_without_submitting(tmp_path, data_dir):
    _mono_inputs(tmp_path, data_dir)
    cfg = load_config(PrepareConfig, _write(tmp_path, _config(tmp_path, data_dir, executor="slurm", slurm=SLURM)))
    chain = slurm_chain(cfg, tmp_path / "out")
    assert [ex.job_name for ex in chain] == [f"lg-news-{s}" for s in STAGES]
    assert chain[0].depends is None and all(b.depends is a for a, b in zip(chain, chain[1:]))
    assert [ex.tasks for ex in chain][1::3] == [1, 1]  # the exact-dedup merge and the clustering: one task each
    # the sbatch script, as datatrove writes it at submission
    script = chain[0].get_launch_file_contents(chain[0].get_sbatch_args(chain[0].tasks), "launch_pickled_pipeline x")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=01:00:00", "#SBATCH --job-name=lg-news-A-clean",
                 "#SBATCH --account=proj7", f"#SBATCH --array=0-{chain[0].tasks - 1}",
                 "source /shared/venv/bin/activate"):
        assert line in script
    assert not any((tmp_path / ".out.work/news/logs").rglob("launch_script.slurm"))  # nothing submitted


def _fake_sbatch(tmp_path: Path, monkeypatch) -> Path:
    """`sbatch` that records its arguments and script and answers like Slurm, ids from 100 up."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.jsonl"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"""#!/bin/sh
n=$(( $(cat {log} 2>/dev/null | wc -l) + 100 ))
python3 -c 'import json, sys; print(json.dumps({{"id": int(sys.argv[1]), "args": sys.argv[2:-1],
    "script": open(sys.argv[-1]).read()}}))' "$n" "$@" >> {log}
echo "Submitted batch job $n"
""")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_submits_the_chain_then_publishes_once_it_ran(tmp_path, data_dir, monkeypatch, capsys):
    log = _fake_sbatch(tmp_path, monkeypatch)
    _mono_inputs(tmp_path, data_dir)
    config = _write(tmp_path, _config(tmp_path, data_dir, executor="slurm", slurm=SLURM))
    args = ["data", "prepare", "--config", str(config), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert "submitted the Slurm job chain" in capsys.readouterr().out and not (tmp_path / "out").exists()
    jobs = [json.loads(line) for line in log.read_text().splitlines()]
    stages = [j for j in jobs if "launch_pickled_pipeline" in j["script"]]  # the rest merge each stage's stats
    assert [s["script"].split("--job-name=")[1].split()[0] for s in stages] == [f"lg-news-{s}" for s in STAGES]
    for before, after in zip(stages, stages[1:]):  # each stage waits for the one before it
        assert f"--dependency=afterok:{before['id']}" in after["args"]
    assert main(args) == 2  # the jobs have not run: not submitted twice
    assert "Slurm jobs submitted before" in capsys.readouterr().err
    # the "cluster" runs the pickled stages' tasks; the same command then publishes
    for _, _, pipeline, tasks, logging_dir in cluster_stages(load_config(PrepareConfig, config), tmp_path / "out"):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(logging_dir)).run()
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "out" / "news" / "dataset.json").is_file()


def test_ray_without_ray_installed_is_one_line(tmp_path, data_dir, capsys):
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    _mono_inputs(tmp_path, data_dir)
    config = _write(tmp_path, _config(tmp_path, data_dir, executor="ray"))
    assert main(["data", "prepare", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("langgraft: error: config: executor: ray needs the ray package, which is not installed "
                       "(pip install 'ray[default]')")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("section, wrong", [("slurm", {"partitions": "cpu"}), ("ray", {"adress": "auto"}),
                                            (None, {"executor": "kubernetes"})])
def test_unknown_executor_settings_are_named(tmp_path, data_dir, section, wrong):
    raw = _config(tmp_path, data_dir, **({section: wrong} if section else wrong))
    with pytest.raises(Exception) as info:
        load_config(PrepareConfig, _write(tmp_path, raw))
    assert next(iter(wrong)) in str(info.value)
