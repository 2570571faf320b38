"""Where the `data prepare` engine's stages run, chosen by the config's `executor` (datatrove's executors):

- local: `LocalPipelineExecutor`, a pool of `workers` processes on this machine, stage after stage;
- ray: `RayPipelineExecutor` on a Ray cluster (`ray.address`), stage after stage, each waited for here; then the
  output is published as after a local run;
- slurm: a chain of `SlurmPipelineExecutor` job arrays, one per stage, each depending on the one before
  (`--dependency=afterok`), submitted with `sbatch`; the command returns once they are queued. Run the same
  command again when they have finished: every task is found complete and the output is published. A rerun
  while jobs of the chain are still unfinished stops with one line instead of submitting them twice.

`root`, `--out` and its work folder must be on a filesystem every node shares (the steps use local file paths).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from langgraft.data.config import PrepareConfig, RayConfig
from langgraft.errors import UserError

SUBMITTED = "slurm-jobs.json"  # in the work folder: the chain submitted last, so a rerun does not submit it again


def run_local(pipeline: list, *, tasks: int, workers: int, logging_dir: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor

    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=max(1, min(workers, tasks)),
                          logging_dir=str(logging_dir)).run()


def run_ray(pipeline: list, *, tasks: int, settings: RayConfig, logging_dir: Path) -> None:
    """One stage on Ray, waited for (its `run` returns when every task has finished)."""
    ray = need_ray()
    from datatrove.executor import RayPipelineExecutor

    if not ray.is_initialized():
        ray.init(address=settings.address or None)
    RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=settings.workers or -1, logging_dir=str(logging_dir),
                        cpus_per_task=settings.cpus_per_task, mem_per_cpu_gb=settings.mem_per_cpu_gb,
                        tasks_per_job=settings.tasks_per_job, time=settings.time or None).run()


def need_ray():
    """The ray module, or one line saying it is missing: ray is not a dependency of langgraft (a Ray cluster comes
    with its own), so it is looked up by name when the config asks for it."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UserError("config: executor: ray needs the ray package, which is not installed "
                        "(pip install 'ray[default]')")
    return importlib.import_module("ray")


def slurm_chain(cfg: PrepareConfig, out: str | Path) -> list:
    """The `SlurmPipelineExecutor` of every stage of every dataset, in order, each depending on the one before;
    built, not submitted (`submit_slurm` submits the last, which submits the chain)."""
    from datatrove.executor import SlurmPipelineExecutor

    from langgraft.data.prepare import cluster_stages

    s = cfg.slurm
    if not s.partition:
        raise UserError("config: slurm.partition: required with executor: slurm")
    venv = s.venv_path or (str(Path(sys.prefix) / "bin" / "activate") if not s.env_command else "")
    chain: list = []
    for dataset, stage, pipeline, tasks, logging_dir in cluster_stages(cfg, out):
        chain.append(SlurmPipelineExecutor(
            pipeline=pipeline, tasks=tasks, logging_dir=str(logging_dir), depends=chain[-1] if chain else None,
            job_name=f"{s.job_name}-{dataset}-{stage}", partition=s.partition, time=s.time,
            cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos,
            workers=s.array_parallel or -1, tasks_per_job=s.tasks_per_job, max_array_size=s.max_array_size,
            venv_path=venv or None, env_command=s.env_command or None, sbatch_args=dict(s.sbatch_args),
            slurm_logs_folder=str(logging_dir / "slurm")))
    return chain


def submit_slurm(cfg: PrepareConfig, out: str | Path) -> dict | None:
    """Submit the stages' job chain, unless every task has finished (None: publish now, as after a local run).
    {"jobs", "record"}: the submitted job ids, last stage's last, and where they are recorded."""
    chain = slurm_chain(cfg, out)
    left = {ex.job_name: len(ex.get_incomplete_ranks()) for ex in chain}
    if not any(left.values()):
        return None
    record = Path(out).parent / f".{Path(out).name}.work" / SUBMITTED
    if record.is_file():
        jobs = json.loads(record.read_text(encoding="utf-8"))["jobs"]
        unfinished = sum(left.values())
        raise UserError(f"--out {out}: the Slurm jobs submitted before ({', '.join(map(str, jobs))}) have "
                        f"{unfinished} unfinished tasks; wait for them (squeue), or delete {record} to submit the "
                        "unfinished tasks again")
    try:
        chain[-1].run()  # launches its dependencies first, each with --dependency=afterok on the one before
    except FileNotFoundError:
        raise UserError("config: executor: slurm needs the sbatch command, which is not on PATH") from None
    jobs = [ex.job_id for ex in chain if ex.job_id not in (None, -1)]
    record.write_text(json.dumps({"jobs": jobs, "stages": list(left)}), encoding="utf-8")
    return {"jobs": jobs, "record": str(record)}
