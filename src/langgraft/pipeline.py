"""`langgraft run RECIPE.yaml`: the whole method, stage by stage, into `OUT/<stage>/`, resumable.

Stages, in order (`--from`/`--to` take these names):
  data              `data prepare` (normaliser: the recipe's tokenizer.normalizer)  → OUT/data/
  tokenizer         `tokenizer train` on target-language text: tokenizer.input     → OUT/tokenizer/
                    files and/or the train split of the prepared tokenizer.dataset
  tokenizer_extend  merge it into the base tokenizer                               → OUT/tokenizer_extend/
  model_extend      embedding surgery; evaluates the base and the extended model   → OUT/model_extend/, OUT/eval/
  align             `train --stage align` + `export`; evaluates the result         → OUT/align/{train,export}/
  pretrain          `train --stage pretrain` on the aligned model + `export`; eval  → OUT/pretrain/{train,export}/
  instruct          `train --stage instruct` on the pretrained model + `export`;    → OUT/instruct/{train,export}/
                    eval (optional: only when the recipe names instruct.dataset)
  report            `eval --compare` of every evaluated stage + tokenizer report    → OUT/report/
                    + MODEL_CARD.md (the last stage's model card with every evaluation)
Each stage calls the Python API of its verb, and each of those skips itself when its manifest matches (same
config, same inputs), so a rerun skips finished stages and a killed run continues from the first unfinished one
(training resumes from its last checkpoint). Training runs also record which upstream outputs they were built on
(`upstream.json`: the upstream manifests' fingerprints and start times); a rebuilt upstream stage retrains them.

Relative paths in a recipe are relative to the working directory (`base_dir` for the Python API, which
`langgraft demo` points at its own folder). A recipe's sections hold each verb's own flags, or the path of the
verb's own YAML config plus dotted overrides (schema: recipe.py); unknown keys anywhere are one-line errors before
anything runs.

Multi-GPU: `accelerate launch -m langgraft run RECIPE.yaml` (or torchrun) runs the training stages on every
process (DDP, FSDP, ZeRO as the launch config says) and everything else — tokenizer, data, surgery, export, eval,
report — on the main process while the others wait at a barrier (timeout 24 h: evaluating a 7B model on one GPU
takes long).

Why not a workflow engine (Snakemake, DVC, Luigi): the stages are a fixed sequence of eight calls, and "up to
date" already has one definition here (the manifests' config + input hashes); an engine would bring a second one
(file times, its own lock files) that can disagree with it, and another dependency.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from langgraft.config import from_dict, to_dict
from langgraft.consolelog import own
from langgraft.errors import UserError
from langgraft.recipe import (STAGES, Plan, TrainSection, check_inputs, load_recipe, select_stages,
                              task_items)
from langgraft.rundir import output_lock, output_stamp, read_manifest, run_stage, write_json

# ---------------------------------------------------------------- running
def run_recipe(path: str | Path, overrides: Sequence[str] = (), *, start: str | None = None,
               stop: str | None = None, base_dir: str | Path | None = None, log=print) -> dict:
    """Run the recipe's stages `start`..`stop`; returns {"out", "stages": {name: {status, seconds}}, "summary"}."""
    plan = load_recipe(path, overrides, base_dir=base_dir)
    stages = select_stages(start, stop)
    ranks = _ranks()
    if not ranks.main:
        log = _silent
    # one `langgraft run` per output folder: a second one gets one line naming the first one's pid
    with output_lock(plan.out) if ranks.main else contextlib.nullcontext():
        check_inputs(plan, stages)
        _check_earlier_outputs(plan, stages)
        own(plan.out)
        status = _run_stages(plan, stages, ranks, log)
    summary = json.loads((plan.out / "report" / "summary.json").read_text(encoding="utf-8")) \
        if "report" in stages and ranks.main else None
    return {"out": str(plan.out), "stages": status, "summary": summary}


def _run_stages(plan: Plan, stages: list[str], ranks, log) -> dict[str, dict]:
    status: dict[str, dict] = {}
    for n, stage in enumerate(stages, 1):
        started = time.time()
        log(f"[{n}/{len(stages)}] {stage} ...")
        if stage in TRAIN_STAGES:
            skipped = _train_stage(plan, stage, ranks)
        else:
            skipped = STAGE_FUNCS[stage](plan) if ranks.main else True
            ranks.barrier()
        state = "not configured" if plan.skipped(stage) else "skipped" if skipped else "ran"
        status[stage] = {"status": state, "seconds": round(time.time() - started, 2)}
        word = {"not configured": f"not configured (no {stage}.dataset in the recipe)",
                "skipped": "up to date, skipped"}.get(state, f"done in {status[stage]['seconds']:.1f} s")
        log(f"[{n}/{len(stages)}] {stage}: {word} → {plan.stage_dir(stage)}")
        if ranks.main:
            write_json(plan.out / "pipeline.json", {"recipe": plan.source, "resolved": to_dict(plan.recipe),
                                                    "stages": status})
    return status


@dataclass
class _Ranks:
    """This process's place in a multi-process launch of `langgraft run` (one process: main, no-op barrier)."""

    main: bool = True
    barrier: Callable[[], None] = lambda: None


def _ranks() -> _Ranks:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Ranks()
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    # the same process group the training stages' Accelerator then reuses (cpu=True: gloo without a GPU)
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=24))
    return _Ranks(state.is_main_process, state.wait_for_everyone)


def _silent(*_args, **_kwargs) -> None:
    return None


def _check_earlier_outputs(plan: Plan, stages: list[str]) -> None:
    first = STAGES.index(stages[0])
    outputs = {"data": "data", "tokenizer": "tokenizer", "tokenizer_extend": "tokenizer_extend",
               "model_extend": "model_extend", "align": "align/export", "pretrain": "pretrain/export",
               "instruct": "instruct/export"}
    for stage in STAGES[:first]:
        if not plan.skipped(stage) and read_manifest(plan.out / outputs[stage]) is None:
            raise UserError(f"--from {stages[0]}: stage {stage} has no finished output in "
                            f"{plan.out / outputs[stage]}; run it first")


def _ran(path: Path, fn) -> bool:
    """Call fn(); True when it produced a new output at `path` (False: skipped as up to date)."""
    before = output_stamp(path)
    fn()
    return before is None or output_stamp(path) != before


def _tokenizer(plan: Plan) -> bool:
    from langgraft.tokenizer.train import train_tokenizer

    t = plan.recipe.tokenizer
    out = plan.stage_dir("tokenizer")
    inputs = [str(plan.path(p)) for p in t.input]
    if t.dataset:  # the leak-guarded train split only: evaluation text stays out of the vocabulary
        inputs.append(f"{plan.stage_dir('data') / t.dataset}:train")
    return not _ran(out, lambda: train_tokenizer(
        inputs, lang=plan.recipe.lang, vocab_size=t.vocab_size, model_type=t.model_type,
        out=out, field=t.field, max_sentences=t.max_sentences, threads=t.threads, normalizer=t.normalizer))


def _tokenizer_extend(plan: Plan) -> bool:
    from langgraft.tokenizer.extend import extend_tokenizer

    out = plan.stage_dir("tokenizer_extend")
    return not _ran(out, lambda: extend_tokenizer(plan.base_tokenizer, plan.stage_dir("tokenizer"),
                                                  lang=plan.recipe.lang, out=out))


def data_config(plan: Plan):
    """The `data prepare` config the data stage runs: paths resolved, and the leak guard extended by every task
    the recipe evaluates, read from the task files where the evaluation reads them."""
    from langgraft.data.config import PrepareConfig
    from langgraft.eval.tasks import default_data_root

    cfg = from_dict(PrepareConfig, to_dict(plan.prepare))
    cfg.root = str(plan.path(cfg.root))
    guard, e = cfg.leak_guard, plan.recipe.eval
    guard.tasks = [str(plan.path(t)) if t.endswith((".yaml", ".yml")) else t for t in guard.tasks]
    guard.tasks += [t for t in task_items(plan) if t not in guard.tasks]
    if guard.tasks_root:
        guard.tasks_root = str(plan.path(guard.tasks_root))
    else:
        guard.tasks_root = str(plan.path(e.data_root)) if e.data_root else str(default_data_root())
    return cfg


def _data(plan: Plan) -> bool:
    from langgraft.data.prepare import prepare
    from langgraft.lang import get_language

    cfg = data_config(plan)
    # the corpus is normalised exactly as the tokenizer's training text is (unless the data config says otherwise):
    # the settings `tokenizer train` records, built from the same recipe section
    language = get_language(plan.recipe.lang, **plan.recipe.tokenizer.normalizer)
    cfg.normalizer.setdefault(language.code, language.normalizer_config)
    out = plan.stage_dir("data")
    return not _ran(out, lambda: prepare(cfg, out))


def _model_extend(plan: Plan) -> bool:
    from langgraft.model.extend import extend_model

    m = plan.recipe.model_extend
    out = plan.stage_dir("model_extend")
    ran = _ran(out, lambda: extend_model(plan.base_model, plan.stage_dir("tokenizer_extend"), out=out, init=m.init,
                                         seed=m.seed, trust_tokenizer=m.trust_tokenizer))
    evals = [_evaluate(plan, point) for point in ("base", "extended")]
    return not ran and not any(evals)


def _train_stage(plan: Plan, stage: str, ranks: _Ranks) -> bool:
    from langgraft.export import export_run
    from langgraft.train.stages import train

    if plan.skipped(stage):
        return True
    section: TrainSection = getattr(plan.recipe, stage)
    cfg = from_dict(type(plan.train[stage]), to_dict(plan.train[stage]))
    previous = {"align": "extended", "pretrain": "align", "instruct": "pretrain"}[stage]
    parent = "model_extend" if stage == "align" else f"{previous}/export"
    cfg.model = plan.model_of(previous)
    cfg.data.dataset = str(plan.stage_dir("data") / section.dataset)
    if section.replay:
        cfg.data.replay = str(plan.stage_dir("data") / section.replay)
    run_dir, export_dir = plan.out / stage / "train", plan.out / stage / "export"
    upstream = {"model": output_stamp(plan.out / parent), "data": output_stamp(plan.stage_dir("data"))}
    if ranks.main:
        _discard_stale(run_dir, stage, cfg, json.loads(json.dumps(upstream)))
        write_json(plan.out / stage / "upstream.json", upstream)
    ranks.barrier()
    trained = _ran(run_dir, lambda: train(stage, cfg, out=run_dir, resume=True))  # every process: DDP/FSDP
    exported = evaluated = False
    if ranks.main:
        exported = _ran(export_dir, lambda: export_run(run_dir, out=export_dir))
        evaluated = _evaluate(plan, stage)
    ranks.barrier()
    return not (trained or exported or evaluated)


def _discard_stale(run_dir: Path, stage: str, cfg, upstream: dict) -> None:
    """A training run built on another config or another upstream output is not resumed but started over."""
    saved_path = run_dir / "train_config.json"
    up_path = run_dir.parent / "upstream.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8")).get("config")
    wanted = json.loads(json.dumps({"stage": stage, **to_dict(cfg)}))
    same_upstream = up_path.is_file() and json.loads(up_path.read_text(encoding="utf-8")) == upstream
    if saved == wanted and (same_upstream or not up_path.is_file()):
        return
    why = "its config changed" if saved != wanted else "an upstream stage was rebuilt"
    print(f"langgraft: {stage}: {why}; discarding {run_dir.parent} and training again", file=sys.stderr)
    shutil.rmtree(run_dir.parent)


def _evaluate(plan: Plan, point: str) -> bool:
    """Evaluate one model stage into OUT/eval/<point>/; True when it ran (False: skipped or not requested)."""
    from langgraft.eval.run import EvalOptions, run_eval

    e = plan.recipe.eval
    if point not in plan.eval_points():
        return False
    opts = EvalOptions(limit=e.limit, sample_seed=e.sample_seed, shots=e.shots, batch_size=e.batch_size,
                       device=e.device, max_new_tokens=e.max_new_tokens, chat=point in e.chat_stages)
    out = plan.out / "eval" / point
    root = str(plan.path(e.data_root)) if e.data_root else None
    doc: dict = {}
    ran = _ran(out, lambda: doc.update(run_eval({point: plan.model_of(point)}, task_items(plan), out, opts,
                                                data_root=root)))
    if doc.get("errors"):
        raise UserError(f"eval of {point} ({out}): {doc['errors'][0]}")
    return ran


def _report(plan: Plan) -> bool:
    e = plan.recipe.eval
    evals = [plan.out / "eval" / p for p in plan.eval_points()]
    if not evals:
        raise UserError(f"{plan.source}: eval.stages is empty; the report has nothing to compare")
    missing = [str(d) for d in evals if not (d / "results.json").is_file()]
    if missing:
        raise UserError(f"report: no evaluation in {missing[0]}; run the model stages first")
    texts = {lang: str(plan.path(p)) for lang, p in e.texts.items()}
    tokenizers = {"base": plan.base_tokenizer, "extended": str(plan.stage_dir("tokenizer_extend"))}
    training = {s: str(plan.out / s / "train" / "metrics.jsonl") for s in TRAIN_STAGES
                if (plan.out / s / "train" / "metrics.jsonl").is_file()}
    config = {"evals": [str(d) for d in evals], "texts": texts, "tokenizers": tokenizers, "lang": plan.recipe.lang,
              "training": training}
    inputs = [d / "results.json" for d in evals] + [plan.stage_dir("tokenizer_extend"), *texts.values(),
                                                     *training.values()]
    out = plan.stage_dir("report")
    return not _ran(out, lambda: run_stage(out, stage="report", config=config, inputs=inputs,
                                           work=lambda tmp: _write_report(plan, tmp, config)))


def _write_report(plan: Plan, tmp: Path, config: dict) -> dict:
    """The report, plus MODEL_CARD.md: the model card of the last trained stage with every evaluation (each
    export's own card was written before its stage was evaluated, so it lists only the evaluations before it)."""
    from langgraft.modelcard import gather, write_model_card
    from langgraft.pipeline_report import write_report

    summary = write_report(tmp, config)
    runs = [plan.out / s / "train" for s in TRAIN_STAGES if (plan.out / s / "train" / "manifest.json").is_file()]
    if runs:
        write_model_card(tmp, gather(runs[-1], report=tmp), name="MODEL_CARD.md")
    return summary


STAGE_FUNCS = {"data": _data, "tokenizer": _tokenizer, "tokenizer_extend": _tokenizer_extend,
               "model_extend": _model_extend, "report": _report}
TRAIN_STAGES = ("align", "pretrain", "instruct")  # run by every process of a multi-process launch
