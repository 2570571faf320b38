"""`langgraft run RECIPE.yaml`: the whole method, stage by stage, into `OUT/<stage>/`, resumable.

Stages, in order (`--from`/`--to` take these names):
  tokenizer         `tokenizer train` on target-language text                      → OUT/tokenizer/
  tokenizer_extend  merge it into the base tokenizer                               → OUT/tokenizer_extend/
  data              `data prepare` (normaliser taken from OUT/tokenizer)            → OUT/data/
  model_extend      embedding surgery; evaluates the base and the extended model   → OUT/model_extend/, OUT/eval/
  align             `train --stage align` + `export`; evaluates the result         → OUT/align/{train,export}/
  pretrain          `train --stage pretrain` on the aligned model + `export`; eval  → OUT/pretrain/{train,export}/
  report            `eval --compare` of every evaluated stage + tokenizer report    → OUT/report/
Each stage calls the Python API of its verb, and each of those skips itself when its manifest matches (same
config, same inputs), so a rerun skips finished stages and a killed run continues from the first unfinished one
(training resumes from its last checkpoint). Training runs also record which upstream outputs they were built on
(`upstream.json`: the upstream manifests' fingerprints and start times); a rebuilt upstream stage retrains them.

Relative paths in a recipe are relative to the working directory (`base_dir` for the Python API, which
`langgraft demo` points at its own folder). A recipe's sections hold each verb's own flags, or the path of the
verb's own YAML config plus dotted overrides; unknown keys anywhere are one-line errors before anything runs.

Why not a workflow engine (Snakemake, DVC, Luigi): the stages are a fixed sequence of seven calls, and "up to
date" already has one definition here (the manifests' config + input hashes); an engine would bring a second one
(file times, its own lock files) that can disagree with it, and another dependency.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field as _field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from langgraft.config import from_dict, load_config, to_dict
from langgraft.errors import UserError
from langgraft.rundir import read_manifest, run_stage, write_json

STAGES = ("tokenizer", "tokenizer_extend", "data", "model_extend", "align", "pretrain", "report")
EVAL_POINTS = ("base", "extended", "align", "pretrain")


# ---------------------------------------------------------------- recipe schema
@dataclass
class TokenizerSection:
    input: list[str] = _field(default_factory=list)  # target-language text files (.txt a document per line, .jsonl)
    vocab_size: int = 20000  # SentencePiece pieces (paper: 20,000)
    model_type: Literal["bpe", "unigram"] = "bpe"
    field: str = "text"  # jsonl field holding the text
    max_sentences: int = 2_000_000  # sample at most this many lines
    threads: Optional[int] = None  # trainer threads (default: all cores)
    normalizer: dict[str, Any] = _field(default_factory=dict)  # normaliser options, e.g. {digits: latin}


@dataclass
class TokenizerExtendSection:
    base: str = ""  # base tokenizer (HF dir, tokenizer.model, vocab.json+merges.txt dir); default: model_extend.model


@dataclass
class DataSection:
    config: str = ""  # a `langgraft data prepare` YAML (e.g. recipes/data/persian.yaml)
    overrides: list[str] = _field(default_factory=list)  # dotted overrides of that config, e.g. [workers=8]


@dataclass
class ModelExtendSection:
    model: str = ""  # the base causal LM: local HF dir (or hub id, which needs network)
    init: Literal["mean-subtokens", "mean", "random"] = "mean-subtokens"  # how new rows start
    seed: int = 0  # seed for init=random
    trust_remote_code: bool = False


@dataclass
class TrainSection:
    config: str = ""  # a `langgraft train` YAML (recipes/train/align.yaml, pretrain.yaml); empty = defaults
    dataset: str = ""  # name of the prepared dataset in OUT/data/ to train on
    replay: str = ""  # pretrain: name of a prepared English dataset mixed in (set data.replay_fraction)
    overrides: list[str] = _field(default_factory=list)  # dotted overrides, e.g. [max_steps=100, optim.lr=1e-4]


@dataclass
class EvalSection:
    tasks: list[str] = _field(default_factory=lambda: ["fa_core", "en_core"])  # task names, suites or .yaml files
    stages: list[Literal["base", "extended", "align", "pretrain"]] = _field(
        default_factory=lambda: list(EVAL_POINTS))  # which models to evaluate
    limit: Optional[int] = None  # evaluate only the first N examples of each task
    shots: Optional[int] = None  # in-context examples (default: each task's own)
    batch_size: int = 16
    max_new_tokens: Optional[int] = None  # cap every generation task's budget
    device: Optional[str] = None  # torch device (default: cuda if available, else cpu)
    data_root: str = ""  # task data root (default: $LANGGRAFT_DATA or ../shared/data)
    texts: dict[str, str] = _field(default_factory=dict)  # lang -> held-out text (.txt/.jsonl) for the tokenizer
    # report: fertility base vs extended, and (for languages other than `lang`) the ids-unchanged check


@dataclass
class Recipe:
    out: str = ""  # output folder: one subfolder per stage
    lang: str = "fa"  # the language being grafted
    tokenizer: TokenizerSection = _field(default_factory=TokenizerSection)
    tokenizer_extend: TokenizerExtendSection = _field(default_factory=TokenizerExtendSection)
    data: DataSection = _field(default_factory=DataSection)
    model_extend: ModelExtendSection = _field(default_factory=ModelExtendSection)
    align: TrainSection = _field(default_factory=TrainSection)
    pretrain: TrainSection = _field(default_factory=TrainSection)
    eval: EvalSection = _field(default_factory=EvalSection)


@dataclass
class Plan:
    """A checked recipe: resolved paths and the stages' own configs, loaded and validated up front."""

    recipe: Recipe
    source: str  # recipe file, for error messages
    base_dir: Path
    out: Path
    prepare: Any  # data.config.PrepareConfig
    train: dict  # "align"/"pretrain" -> train.config.TrainConfig

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def model_path(self, value: str) -> str:
        """A local model path resolved; a hub id (org/name, not on disk) kept as it is."""
        p = self.path(value)
        return str(p) if p.exists() or value.startswith((".", "/", "~")) or value.count("/") != 1 else value

    @property
    def base_model(self) -> str:
        return self.model_path(self.recipe.model_extend.model)

    @property
    def base_tokenizer(self) -> str:
        return self.model_path(self.recipe.tokenizer_extend.base or self.recipe.model_extend.model)

    def stage_dir(self, stage: str) -> Path:
        return self.out / stage

    def model_of(self, point: str) -> str:
        return {"base": self.base_model, "extended": str(self.out / "model_extend"),
                "align": str(self.out / "align" / "export" / "model"),
                "pretrain": str(self.out / "pretrain" / "export" / "model")}[point]


# ---------------------------------------------------------------- loading and checking
def load_recipe(path: str | Path, overrides: Sequence[str] = (), *, base_dir: str | Path | None = None) -> Plan:
    """Read + validate a recipe and every config it names; raises one UserError line for the first problem."""
    from langgraft.data.config import PrepareConfig
    from langgraft.lang import get_language
    from langgraft.train.config import TrainConfig

    recipe = load_config(Recipe, path, overrides)
    src = str(path)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not recipe.out:
        raise UserError(f"{src}: out: required (the output folder)")
    get_language(recipe.lang)
    plan = Plan(recipe, src, base, Path(recipe.out) if Path(recipe.out).is_absolute() else base / recipe.out,
                None, {})
    plan.prepare = _sub_config(plan, PrepareConfig, "data", recipe.data.config, recipe.data.overrides)
    names = [ds.name for ds in plan.prepare.datasets]
    for stage in ("align", "pretrain"):
        section: TrainSection = getattr(recipe, stage)
        plan.train[stage] = _sub_config(plan, TrainConfig, stage, section.config, section.overrides)
        for key in ("dataset", "replay"):
            name = getattr(section, key)
            if (name or key == "dataset") and name not in names:
                raise UserError(f"{src}: {stage}.{key} {name!r} is not a dataset of data.config "
                                f"(datasets: {', '.join(names) or 'none'})")
    return plan


def _sub_config(plan: Plan, cls: type, key: str, config: str, overrides: list[str]):
    if config and not plan.path(config).is_file():
        raise UserError(f"{plan.source}: {key}.config {config}: file not found")
    try:
        return load_config(cls, plan.path(config) if config else None, overrides)
    except UserError as exc:
        raise UserError(f"{plan.source}: {key}: {exc}") from None


def check_inputs(plan: Plan, stages: Sequence[str]) -> None:
    """Inputs of the stages about to run must exist: fail before the first stage, naming the recipe key."""
    r, src = plan.recipe, plan.source

    def need(key: str, value: str, model: bool = False) -> None:
        if not value:
            raise UserError(f"{src}: {key}: required")
        resolved = plan.model_path(value) if model else str(plan.path(value))
        if not Path(resolved).exists() and (not model or resolved != value):
            raise UserError(f"{src}: {key} {value}: not found (looked at {resolved})")

    if "tokenizer" in stages:
        if not r.tokenizer.input:
            raise UserError(f"{src}: tokenizer.input: required (target-language text files)")
        for i, item in enumerate(r.tokenizer.input):
            need(f"tokenizer.input[{i}]", item)
    if "tokenizer_extend" in stages:  # a local tokenizer: `tokenizer extend` does not download
        need("tokenizer_extend.base" if r.tokenizer_extend.base else "model_extend.model",
             r.tokenizer_extend.base or r.model_extend.model)
    if "model_extend" in stages:
        need("model_extend.model", r.model_extend.model, model=True)
    if "data" in stages:
        root = plan.path(plan.prepare.root)
        if not root.is_dir():
            raise UserError(f"{src}: data: root {plan.prepare.root}: not a folder (looked at {root})")
    if set(stages) & {"model_extend", "align", "pretrain", "report"}:
        for lang, text in r.eval.texts.items():
            need(f"eval.texts.{lang}", text)
        if r.eval.data_root:
            need("eval.data_root", r.eval.data_root)
        from langgraft.eval.tasks import resolve_tasks

        try:
            resolve_tasks(_task_items(plan))
        except UserError as exc:
            raise UserError(f"{src}: eval.tasks: {exc}") from None


def _task_items(plan: Plan) -> list[str]:
    return [str(plan.path(t)) if t.endswith((".yaml", ".yml")) else t for t in plan.recipe.eval.tasks]


def select_stages(start: str | None, stop: str | None) -> list[str]:
    for flag, name in (("--from", start), ("--to", stop)):
        if name is not None and name not in STAGES:
            raise UserError(f"{flag} {name}: not a stage (stages: {', '.join(STAGES)})")
    i = STAGES.index(start) if start else 0
    j = STAGES.index(stop) if stop else len(STAGES) - 1
    if i > j:
        raise UserError(f"--from {start} comes after --to {stop}")
    return list(STAGES[i:j + 1])


# ---------------------------------------------------------------- running
def run_recipe(path: str | Path, overrides: Sequence[str] = (), *, start: str | None = None,
               stop: str | None = None, base_dir: str | Path | None = None, log=print) -> dict:
    """Run the recipe's stages `start`..`stop`; returns {"out", "stages": {name: {status, seconds}}, "summary"}."""
    plan = load_recipe(path, overrides, base_dir=base_dir)
    stages = select_stages(start, stop)
    check_inputs(plan, stages)
    _check_earlier_outputs(plan, stages)
    status: dict[str, dict] = {}
    for n, stage in enumerate(stages, 1):
        started = time.time()
        log(f"[{n}/{len(stages)}] {stage} ...")
        skipped = STAGE_FUNCS[stage](plan)
        status[stage] = {"status": "skipped" if skipped else "ran", "seconds": round(time.time() - started, 2)}
        word = "up to date, skipped" if skipped else f"done in {status[stage]['seconds']:.1f} s"
        log(f"[{n}/{len(stages)}] {stage}: {word} → {plan.stage_dir(stage)}")
        write_json(plan.out / "pipeline.json", {"recipe": plan.source, "resolved": to_dict(plan.recipe),
                                                "stages": status})
    summary = json.loads((plan.out / "report" / "summary.json").read_text(encoding="utf-8")) \
        if "report" in stages else None
    return {"out": str(plan.out), "stages": status, "summary": summary}


def _check_earlier_outputs(plan: Plan, stages: list[str]) -> None:
    first = STAGES.index(stages[0])
    outputs = {"tokenizer": "tokenizer", "tokenizer_extend": "tokenizer_extend", "data": "data",
               "model_extend": "model_extend", "align": "align/export", "pretrain": "pretrain/export"}
    for stage in STAGES[:first]:
        if read_manifest(plan.out / outputs[stage]) is None:
            raise UserError(f"--from {stages[0]}: stage {stage} has no finished output in "
                            f"{plan.out / outputs[stage]}; run it first")


def _stamp(path: Path) -> tuple | None:
    """Identity of one published output: a rerun that skipped leaves it unchanged, a rebuild changes it."""
    m = read_manifest(path)
    return None if m is None else (m.get("fingerprint"), m.get("started"), m.get("wall_time_s"))


def _ran(path: Path, fn) -> bool:
    """Call fn(); True when it produced a new output at `path` (False: skipped as up to date)."""
    before = _stamp(path)
    fn()
    return before is None or _stamp(path) != before


def _tokenizer(plan: Plan) -> bool:
    from langgraft.vocab.train import train_tokenizer

    t = plan.recipe.tokenizer
    out = plan.stage_dir("tokenizer")
    return not _ran(out, lambda: train_tokenizer(
        [plan.path(p) for p in t.input], lang=plan.recipe.lang, vocab_size=t.vocab_size, model_type=t.model_type,
        out=out, field=t.field, max_sentences=t.max_sentences, threads=t.threads, normalizer=t.normalizer))


def _tokenizer_extend(plan: Plan) -> bool:
    from langgraft.vocab.extend import extend_tokenizer

    out = plan.stage_dir("tokenizer_extend")
    return not _ran(out, lambda: extend_tokenizer(plan.base_tokenizer, plan.stage_dir("tokenizer"),
                                                  lang=plan.recipe.lang, out=out))


def _data(plan: Plan) -> bool:
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    cfg = from_dict(PrepareConfig, to_dict(plan.prepare))
    cfg.root = str(plan.path(cfg.root))
    meta = json.loads((plan.stage_dir("tokenizer") / "langgraft.json").read_text(encoding="utf-8"))
    # the corpus is normalised exactly as the tokenizer's training text was (unless the data config says otherwise)
    cfg.normalizer.setdefault(meta["lang"], meta["normalizer"])
    out = plan.stage_dir("data")
    return not _ran(out, lambda: prepare(cfg, out))


def _model_extend(plan: Plan) -> bool:
    from langgraft.surgery.resize import extend_model

    m = plan.recipe.model_extend
    out = plan.stage_dir("model_extend")
    ran = _ran(out, lambda: extend_model(plan.base_model, plan.stage_dir("tokenizer_extend"), out=out, init=m.init,
                                         seed=m.seed, trust_remote_code=m.trust_remote_code))
    evals = [_evaluate(plan, point) for point in ("base", "extended")]
    return not ran and not any(evals)


def _train_stage(plan: Plan, stage: str) -> bool:
    from langgraft.export import export_run
    from langgraft.train.stages import train

    section: TrainSection = getattr(plan.recipe, stage)
    cfg = from_dict(type(plan.train[stage]), to_dict(plan.train[stage]))
    parent = "model_extend" if stage == "align" else "align/export"
    cfg.model = plan.model_of("extended" if stage == "align" else "align")
    cfg.data.dataset = str(plan.stage_dir("data") / section.dataset)
    if section.replay:
        cfg.data.replay = str(plan.stage_dir("data") / section.replay)
    run_dir, export_dir = plan.out / stage / "train", plan.out / stage / "export"
    upstream = {"model": _stamp(plan.out / parent), "data": _stamp(plan.stage_dir("data"))}
    _discard_stale(run_dir, stage, cfg, json.loads(json.dumps(upstream)))
    write_json(plan.out / stage / "upstream.json", upstream)
    trained = _ran(run_dir, lambda: train(stage, cfg, out=run_dir, resume=True))
    exported = _ran(export_dir, lambda: export_run(run_dir, out=export_dir))
    evaluated = _evaluate(plan, stage)
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
    if point not in e.stages:
        return False
    opts = EvalOptions(limit=e.limit, shots=e.shots, batch_size=e.batch_size, device=e.device,
                       max_new_tokens=e.max_new_tokens)
    out = plan.out / "eval" / point
    root = str(plan.path(e.data_root)) if e.data_root else None
    doc: dict = {}
    ran = _ran(out, lambda: doc.update(run_eval({point: plan.model_of(point)}, _task_items(plan), out, opts,
                                                data_root=root)))
    if doc.get("errors"):
        raise UserError(f"eval of {point} ({out}): {doc['errors'][0]}")
    return ran


def _report(plan: Plan) -> bool:
    from langgraft.pipeline_report import write_report

    e = plan.recipe.eval
    evals = [plan.out / "eval" / p for p in EVAL_POINTS if p in e.stages]
    if not evals:
        raise UserError(f"{plan.source}: eval.stages is empty; the report has nothing to compare")
    missing = [str(d) for d in evals if not (d / "results.json").is_file()]
    if missing:
        raise UserError(f"report: no evaluation in {missing[0]}; run the model stages first")
    texts = {lang: str(plan.path(p)) for lang, p in e.texts.items()}
    tokenizers = {"base": plan.base_tokenizer, "extended": str(plan.stage_dir("tokenizer_extend"))}
    config = {"evals": [str(d) for d in evals], "texts": texts, "tokenizers": tokenizers, "lang": plan.recipe.lang}
    inputs = [d / "results.json" for d in evals] + [plan.stage_dir("tokenizer_extend"), *texts.values()]
    out = plan.stage_dir("report")
    return not _ran(out, lambda: run_stage(out, stage="report", config=config, inputs=inputs,
                                           work=lambda tmp: write_report(tmp, config)))


STAGE_FUNCS = {"tokenizer": _tokenizer, "tokenizer_extend": _tokenizer_extend, "data": _data,
               "model_extend": _model_extend, "align": lambda p: _train_stage(p, "align"),
               "pretrain": lambda p: _train_stage(p, "pretrain"), "report": _report}
