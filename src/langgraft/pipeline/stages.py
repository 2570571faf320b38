"""The stages of `langgraft run`, one plain function each: `build_<stage>(plan)` calls its verb's Python API on the
recipe's settings and returns True when it produced a new output (False: every output was up to date).

Training stages run on every process of a launch (`build_training` takes the launch's `Ranks`); the others run
on the main process only.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from langgraft.config import from_dict, to_dict
from langgraft.errors import UserError
from langgraft.pipeline.recipe import TRAIN_STAGES, Plan, TrainSection, task_items
from langgraft.rundir import output_stamp, run_stage, write_json


@dataclass
class Ranks:
    """This process's place in a multi-process launch of `langgraft run` (one process: main, no-op barrier)."""

    main: bool = True
    barrier: Callable[[], None] = lambda: None


def _changed(path: Path, before: dict | None) -> bool:
    """True when the output at `path` is new since `before` (its stamp before the verb ran)."""
    return before is None or output_stamp(path) != before


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


def build_data(plan: Plan) -> bool:
    from langgraft.data.prepare import prepare
    from langgraft.lang import get_language

    cfg = data_config(plan)
    # the corpus is normalised exactly as the tokenizer's training text is (unless the data config says otherwise):
    # the settings `tokenizer train` records, built from the same recipe section
    language = get_language(plan.recipe.lang, **plan.recipe.tokenizer.normalizer)
    cfg.normalizer.setdefault(language.code, language.normalizer_config)
    out = plan.stage_dir("data")
    before = output_stamp(out)
    prepare(cfg, out)
    return _changed(out, before)


def build_tokenizer(plan: Plan) -> bool:
    from langgraft.tokenizer.train import train_tokenizer

    t = plan.recipe.tokenizer
    out = plan.stage_dir("tokenizer")
    inputs = [str(plan.path(p)) for p in t.input]
    if t.dataset:  # the leak-guarded train split only: evaluation text stays out of the vocabulary
        inputs.append(f"{plan.stage_dir('data') / t.dataset}:train")
    before = output_stamp(out)
    train_tokenizer(inputs, lang=plan.recipe.lang, vocab_size=t.vocab_size, model_type=t.model_type, out=out,
                    field=t.field, max_sentences=t.max_sentences, threads=t.threads, normalizer=t.normalizer)
    return _changed(out, before)


def build_tokenizer_extend(plan: Plan) -> bool:
    from langgraft.tokenizer.extend import extend_tokenizer

    out = plan.stage_dir("tokenizer_extend")
    before = output_stamp(out)
    extend_tokenizer(plan.base_tokenizer, plan.stage_dir("tokenizer"), lang=plan.recipe.lang, out=out)
    return _changed(out, before)


def build_model_extend(plan: Plan) -> bool:
    """The extended model (main process; `evaluate_extension` then evaluates the base and it on every process)."""
    from langgraft.model.extend import extend_model

    m = plan.recipe.model_extend
    out = plan.stage_dir("model_extend")
    before = output_stamp(out)
    extend_model(plan.base_model, plan.stage_dir("tokenizer_extend"), out=out, init=m.init, seed=m.seed,
                 trust_tokenizer=m.trust_tokenizer)
    return _changed(out, before)


def evaluate_extension(plan: Plan) -> bool:
    """The evaluations of the base and of the extended model (every process of a launch, each a share)."""
    return any([evaluate(plan, point) for point in ("base", "extended")])


def train_config(plan: Plan, stage: str):
    """The stage's train config with the run's own model (the previous stage's) and prepared datasets."""
    section: TrainSection = getattr(plan.recipe, stage)
    cfg = from_dict(type(plan.train[stage]), to_dict(plan.train[stage]))
    cfg.model = plan.model_of(plan.previous(stage))
    cfg.data.dataset = str(plan.stage_dir("data") / section.dataset)
    if section.replay:
        cfg.data.replay = str(plan.stage_dir("data") / section.replay)
    return cfg


def build_training(plan: Plan, stage: str, ranks: Ranks) -> bool:
    """Train (every process), export (main process) and evaluate (every process, each a share) one training
    stage."""
    from langgraft.export import export_run
    from langgraft.train.stages import train

    if not plan.configured(stage):
        return False
    cfg = train_config(plan, stage)
    previous = plan.previous(stage)
    parent = {"extended": plan.out / "model_extend", "base": None}.get(previous, plan.out / previous / "export")
    run_dir, export_dir = plan.out / stage / "train", plan.out / stage / "export"
    # the base is no run output: its identity is in the training run's own inputs
    upstream = {"model": output_stamp(parent) if parent else None, "data": output_stamp(plan.stage_dir("data"))}
    evaluated_base = previous == "base" and evaluate(plan, "base")  # the control's step 0
    if ranks.main:
        _discard_stale(run_dir, stage, cfg, json.loads(json.dumps(upstream)))
        write_json(plan.out / stage / "upstream.json", upstream)
    ranks.barrier()
    before = output_stamp(run_dir)
    train(stage, cfg, out=run_dir, resume=True)  # every process: DDP/FSDP
    trained = _changed(run_dir, before)
    exported = False
    if ranks.main:
        before = output_stamp(export_dir)
        export_run(run_dir, out=export_dir)
        exported = _changed(export_dir, before)
    ranks.barrier()
    evaluated = evaluate(plan, stage)
    ranks.barrier()
    return trained or exported or evaluated or evaluated_base


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


def evaluate(plan: Plan, point: str) -> bool:
    """Evaluate one model stage into OUT/eval/<point>/; True when it ran (False: up to date or not requested)."""
    from langgraft.eval.options import EvalOptions
    from langgraft.eval.run import run_eval

    e = plan.recipe.eval
    if point not in plan.eval_points():
        return False
    opts = EvalOptions(limit=e.limit, sample_seed=e.sample_seed, shots=e.shots, batch_size=e.batch_size,
                       device=e.device, max_new_tokens=e.max_new_tokens, chat=point in e.chat_stages)
    out = plan.out / "eval" / point
    root = str(plan.path(e.data_root)) if e.data_root else None
    before = output_stamp(out)
    doc = run_eval({point: plan.model_of(point)}, task_items(plan), out, opts, data_root=root)
    if doc.get("errors"):
        raise UserError(f"eval of {point} ({out}): {doc['errors'][0]}")
    return _changed(out, before)


def build_report(plan: Plan) -> bool:
    e = plan.recipe.eval
    evals = [plan.out / "eval" / p for p in plan.eval_points()]
    if not evals:
        raise UserError(f"{plan.source}: eval.stages is empty; the report has nothing to compare")
    missing = [str(d) for d in evals if not (d / "results.json").is_file()]
    if missing:
        raise UserError(f"report: no evaluation in {missing[0]}; run the model stages first")
    texts = {lang: str(plan.path(p)) for lang, p in e.texts.items()}
    tokenizers = {"base": plan.base_tokenizer}
    if plan.grafted:
        tokenizers["extended"] = str(plan.stage_dir("tokenizer_extend"))
    runs = [s for s in TRAIN_STAGES if plan.configured(s) and (plan.out / s / "train" / "manifest.json").is_file()]
    training = {s: str(plan.out / s / "train" / "metrics.jsonl") for s in runs
                if (plan.out / s / "train" / "metrics.jsonl").is_file()}
    config = {"evals": [str(d) for d in evals], "texts": texts, "tokenizers": tokenizers, "lang": plan.recipe.lang,
              "training": training, "runs": {s: str(plan.out / s / "train") for s in runs},
              "arm": "method" if plan.grafted else "control"}
    inputs = [d / "results.json" for d in evals] + [*texts.values(), *training.values()] + \
        [plan.out / s / "train" / "manifest.json" for s in runs] + \
        ([plan.stage_dir("tokenizer_extend")] if plan.grafted else [])
    out = plan.stage_dir("report")
    before = output_stamp(out)
    run_stage(out, stage="report", config=config, inputs=inputs, work=lambda tmp: _write_report(plan, tmp, config))
    return _changed(out, before)


def _write_report(plan: Plan, tmp: Path, config: dict) -> dict:
    """The report, plus MODEL_CARD.md: the model card of the last trained stage with every evaluation (each
    export's own card was written before its stage was evaluated, so it lists only the evaluations before it)."""
    from langgraft.modelcard import gather, write_model_card
    from langgraft.pipeline.report import write_run_report

    summary = write_run_report(tmp, config)
    runs = [Path(run) for run in config["runs"].values()]
    if runs:
        write_model_card(tmp, gather(runs[-1], report=tmp), name="MODEL_CARD.md")
    return summary
