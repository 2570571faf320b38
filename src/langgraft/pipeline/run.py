"""`run_recipe`: load and check a recipe, then build the selected stages in order (the rows of `table.TABLE`), on
every process of a multi-process launch, recording each stage's status in OUT/pipeline.json."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

from langgraft.config import to_dict
from langgraft.consolelog import own
from langgraft.errors import UserError
from langgraft.formats.summary_json import read_summary
from langgraft.pipeline.heap import release_memory
from langgraft.pipeline.recipe import Plan, check_inputs, load_recipe
from langgraft.pipeline.table import TABLE, Stage, select_stages
from langgraft.pipeline.stages import Ranks
from langgraft.rundir import INPUTS, output_lock, read_manifest, write_json


def run_recipe(path: str | Path, overrides: Sequence[str] = (), *, start: str | None = None,
               stop: str | None = None, base_dir: str | Path | None = None, log=print, smoke: bool = False,
               table: tuple[Stage, ...] = TABLE) -> dict:
    """Run the recipe's stages `start`..`stop`; returns {"out", "stages": {name: {status, seconds}}, "summary"}.
    smoke: the short version of the recipe (`recipe.SMOKE_TRAIN`) in OUT-smoke; table: the stages a recipe may
    have (`table.TABLE`)."""
    plan = load_recipe(path, overrides, base_dir=base_dir, smoke=smoke, table=table)
    stages = select_stages(start, stop, plan.recipe.stages, plan.names)
    ranks = _ranks()
    if not ranks.main:
        log = _silent
    # one `langgraft run` per output folder: a second one gets one line naming the first one's pid
    token = INPUTS.set((*INPUTS.get(), *recipe_files(plan)))  # no stage output may hold a file the recipe names
    try:
        with output_lock(plan.out) if ranks.main else contextlib.nullcontext():
            check_inputs(plan, stages)
            _check_earlier_outputs(plan, stages)
            _check_pipeline_json(plan.out / "pipeline.json")
            own(plan.out)
            status = _build_stages(plan, stages, ranks, log)
    finally:
        INPUTS.reset(token)
    summary = read_summary(plan.out / "report") if "report" in stages and ranks.main else None
    return {"out": str(plan.out), "stages": status, "summary": summary}


def _build_stages(plan: Plan, stages: list[str], ranks: Ranks, log) -> dict[str, dict]:
    status: dict[str, dict] = {}
    for n, stage in enumerate(stages, 1):
        started = time.time()
        log(f"[{n}/{len(stages)}] {stage} ...")
        if stage in plan.training and plan.configured(stage) and plan.replaced(stage):
            section = getattr(plan.recipe, stage)
            trains = plan.model_of(plan.previous(stage))
            log(f"  {stage}: {' and '.join(plan.replaced(stage))} in {section.config or stage + '.overrides'} not "
                f"used: the run trains {trains} on {plan.stage_dir('data') / section.dataset}")
        built = plan.row(stage).build(plan, stage, ranks)
        release_memory()  # the next stage starts from what is still alive, not on top of this one's freed heap
        state = "not configured" if not plan.configured(stage) else "ran" if built else "skipped"
        status[stage] = {"status": state, "seconds": round(time.time() - started, 2)}
        word = {"not configured": f"not configured (no {stage}.dataset in the recipe)",
                "skipped": "up to date, skipped"}.get(state, f"done in {status[stage]['seconds']:.1f} s")
        log(f"[{n}/{len(stages)}] {stage}: {word} → {plan.stage_dir(stage)}")
        if ranks.main:
            write_json(plan.out / "pipeline.json", {"recipe": plan.source, "resolved": to_dict(plan.recipe),
                                                    "stages": status})
    return status


def _ranks() -> Ranks:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    # the same process group the training stages' Accelerator then reuses (cpu=True: gloo without a GPU)
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=24))
    return Ranks(state.is_main_process, state.wait_for_everyone)


def _silent(*_args, **_kwargs) -> None:
    return None


def _check_earlier_outputs(plan: Plan, stages: list[str]) -> None:
    first = plan.names.index(stages[0])
    for row in plan.table[:first]:
        if plan.configured(row.name) and read_manifest(plan.out / row.output) is None:
            raise UserError(f"--from {stages[0]}: stage {row.name} has no finished output in "
                            f"{plan.out / row.output}; run it first")


def recipe_files(plan: Plan) -> list[str]:
    """The recipe and every existing file it names (stage configs, task files, texts), as paths."""
    found = [plan.source]

    def walk(value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key != "out":
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value and plan.path(value).is_file():
            found.append(str(plan.path(value)))

    walk(to_dict(plan.recipe))
    return found


def _check_pipeline_json(path: Path) -> None:
    """`pipeline.json` is rewritten after every stage: only one an earlier `langgraft run` wrote (a file, not a
    link, holding its three keys), never a file of the user's that happens to carry the name."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        doc = None if path.is_symlink() else json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not {"recipe", "resolved", "stages"} <= doc.keys():
        raise UserError(f"out {path.parent}: its pipeline.json was not written by `langgraft run`; pick another "
                        "out (the recipe's `out:` or out=DIR)")
