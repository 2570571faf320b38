"""The stages of `langgraft run`, one plain function each, named by a row of `table.TABLE`: `build_<stage>(plan,
name, ranks)` calls its verb's Python API on the recipe's settings and returns True when it produced a new output
(False: the verb's `StageResult` said every output was up to date).

Every process of a launch calls each stage: training and evaluation share the work across processes, the other
stages run on the main process while the rest wait (`main_only`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from typing import TYPE_CHECKING

from langgraft.config import from_dict, to_dict
from langgraft.errors import UserError
from langgraft.formats.results_json import results_path
from langgraft.options import project
from langgraft.pipeline.heap import release_memory
from langgraft.rundir import output_stamp, run_stage, write_json
from langgraft.rundir.training import CONFIG_NAME, METRICS_NAME, read_train_config

if TYPE_CHECKING:  # the recipe module holds the table of these functions
    from langgraft.pipeline.recipe import Plan
    from langgraft.pipeline.table import TrainSection


@dataclass
class Ranks:
    """This process's place in a multi-process launch of `langgraft run` (one process: main, no-op barrier)."""

    main: bool = True
    barrier: Callable[[], None] = lambda: None


def main_only(build: Callable[["Plan"], bool]) -> Callable[["Plan", str, Ranks], bool]:
    """A stage built by the main process of a launch while the others wait (data, tokenizers, the report)."""
    def run(plan: "Plan", _name: str, ranks: Ranks) -> bool:
        built = build(plan) if ranks.main else False
        ranks.barrier()
        return built

    run.__name__ = build.__name__
    return run


def task_items(plan: "Plan") -> list[str]:
    return [str(plan.path(t)) if t.endswith((".yaml", ".yml")) else t for t in plan.recipe.eval.tasks]


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


def build_data(plan: "Plan") -> bool:
    from langgraft.data.prepare import prepare
    from langgraft.lang import get_language

    cfg = data_config(plan)
    # the corpus is normalised exactly as the tokenizer's training text is (unless the data config says otherwise):
    # the settings `tokenizer train` records, built from the same recipe section
    language = get_language(plan.recipe.lang, **plan.recipe.tokenizer.normalizer)
    cfg.normalizer.setdefault(language.code, language.normalizer_config)
    return not prepare(cfg, plan.stage_dir("data")).skipped


def build_tokenizer(plan: Plan) -> bool:
    from langgraft.tokenizer.train import TokenizerTrainOptions, train_tokenizer

    t = plan.recipe.tokenizer
    inputs = [str(plan.path(p)) for p in t.input]
    if t.dataset:  # the leak-guarded train split only: evaluation text stays out of the vocabulary
        inputs.append(f"{plan.stage_dir('data') / t.dataset}:train")
    return not train_tokenizer(inputs, lang=plan.recipe.lang, out=plan.stage_dir("tokenizer"),
                               opts=project(TokenizerTrainOptions, t)).skipped


def build_tokenizer_extend(plan: Plan) -> bool:
    from langgraft.tokenizer.extend import extend_tokenizer

    return not extend_tokenizer(plan.base_tokenizer, plan.stage_dir("tokenizer"), lang=plan.recipe.lang,
                                out=plan.stage_dir("tokenizer_extend")).skipped


def build_model_extend(plan: Plan, _name: str, ranks: Ranks) -> bool:
    """The extended model (main process), then the evaluations of the base and of it (every process, each a
    share)."""
    from langgraft.model.extend import extend_model
    from langgraft.model.options import ExtendOptions

    built = False
    if ranks.main:
        built = not extend_model(plan.base_model, plan.stage_dir("tokenizer_extend"), out=plan.stage_dir("model_extend"),
                                 opts=project(ExtendOptions, plan.recipe.model_extend)).skipped
    ranks.barrier()
    return any([evaluate(plan, point) for point in ("base", "extended")]) or built


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
    from langgraft.export.run import export_run
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
    trained = not train(stage, cfg, out=run_dir, resume=True).skipped  # every process: DDP/FSDP
    release_memory()  # the trained model's memory, before the export loads the parent model again
    exported = False
    if ranks.main:
        exported = not export_run(run_dir, out=export_dir).skipped
        release_memory()
    ranks.barrier()
    evaluated = evaluate(plan, stage)
    ranks.barrier()
    return trained or exported or evaluated or evaluated_base


def _discard_stale(run_dir: Path, stage: str, cfg, upstream: dict) -> None:
    """A training run built on another config or another upstream output is not resumed but started over."""
    saved_path = run_dir / CONFIG_NAME
    up_path = run_dir.parent / "upstream.json"
    if not saved_path.is_file():
        return
    saved = read_train_config(run_dir)
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
    opts = dataclasses.replace(project(EvalOptions, e), chat=e.chat or point in e.chat_stages)
    out = plan.out / "eval" / point
    root = str(plan.path(e.data_root)) if e.data_root else None
    result = run_eval({point: plan.model_of(point)}, task_items(plan), out, opts, data_root=root)
    if result.data.get("errors"):
        raise UserError(f"eval of {point} ({out}): {result.data['errors'][0]}")
    return not result.skipped


def build_report(plan: Plan) -> bool:
    e = plan.recipe.eval
    evals = [plan.out / "eval" / p for p in plan.eval_points()]
    if not evals:
        raise UserError(f"{plan.source}: eval.stages is empty; the report has nothing to compare")
    missing = [str(d) for d in evals if not results_path(d).is_file()]
    if missing:
        raise UserError(f"report: no evaluation in {missing[0]}; run the model stages first")
    texts = {lang: str(plan.path(p)) for lang, p in e.texts.items()}
    tokenizers = {"base": plan.base_tokenizer}
    if plan.grafted:
        tokenizers["extended"] = str(plan.stage_dir("tokenizer_extend"))
    runs = [s for s in plan.training if plan.configured(s) and (plan.out / s / "train" / "manifest.json").is_file()]
    training = {s: str(plan.out / s / "train" / METRICS_NAME) for s in runs
                if (plan.out / s / "train" / METRICS_NAME).is_file()}
    config = {"evals": [str(d) for d in evals], "texts": texts, "tokenizers": tokenizers, "lang": plan.recipe.lang,
              "training": training, "runs": {s: str(plan.out / s / "train") for s in runs},
              "arm": "method" if plan.grafted else "control"}
    inputs = [results_path(d) for d in evals] + [*texts.values(), *training.values()] + \
        [plan.out / s / "train" / "manifest.json" for s in runs] + \
        ([plan.stage_dir("tokenizer_extend")] if plan.grafted else [])
    return not run_stage(plan.stage_dir("report"), stage="report", config=config, inputs=inputs,
                         work=lambda tmp: _write_report(plan, tmp, config)).skipped


def _write_report(plan: Plan, tmp: Path, config: dict) -> dict:
    """The report, plus MODEL_CARD.md: the model card of the last trained stage with every evaluation (each
    export's own card was written before its stage was evaluated, so it lists only the evaluations before it)."""
    from langgraft.export.modelcard import gather, write_model_card
    from langgraft.pipeline.report import write_run_report

    summary = write_run_report(tmp, config)
    runs = [Path(run) for run in config["runs"].values()]
    if runs:
        write_model_card(tmp, gather(runs[-1], report=tmp), name="MODEL_CARD.md")
    return summary
