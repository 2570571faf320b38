"""The recipe of `langgraft run`, loaded and checked before anything runs.

The schema comes from the stage table (`table.py`): a section per stage, unknown keys anywhere are one-line
errors. `load_recipe` resolves paths into a `Plan`, `check_inputs` verifies every input of the selected stages
(`table.select_stages` turns `--from/--to` into the stage list).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from langgraft.config import load_config
from langgraft.errors import UserError
from langgraft.pipeline.stages import task_items
from langgraft.pipeline.table import GRAFT, TABLE, ModelExtendSection, Stage, TrainSection, recipe_class

@dataclass
class Plan:
    """A checked recipe: resolved paths and the stages' own configs, loaded and validated up front."""

    recipe: Any  # a `recipe_class(table)` instance
    source: str  # recipe file, for error messages
    base_dir: Path
    out: Path
    prepare: Any  # data.config.PrepareConfig
    train: dict  # training stage name -> train.config.TrainConfig
    table: tuple[Stage, ...] = TABLE

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def model_path(self, value: str) -> str:
        """A model on disk as its resolved path; anything else kept as written, for `hub.resolve_model` to judge
        (a hub id, or a mistyped path it reports)."""
        p = self.path(value)
        return str(p) if p.exists() else value

    @property
    def base_model(self) -> str:
        return self.model_path(self.recipe.model_extend.model)

    @property
    def base_tokenizer(self) -> str:
        return self.model_path(self.recipe.tokenizer_extend.base or self.recipe.model_extend.model)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.table)

    @property
    def training(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.table if s.trains)

    def row(self, name: str) -> Stage:
        return next(s for s in self.table if s.name == name)

    def stage_dir(self, stage: str) -> Path:
        return self.out / stage

    def task_items(self) -> list[str]:
        return task_items(self)

    def model_of(self, point: str) -> str:
        if point in ("base", "extended"):
            return self.base_model if point == "base" else str(self.out / "model_extend")
        return str(self.out / point / "export" / "model")

    @property
    def grafted(self) -> bool:
        """The method (the recipe extends the vocabulary) rather than the control arm on the base tokenizer."""
        return "model_extend" in self.recipe.stages

    def configured(self, stage: str) -> bool:
        """A stage of the recipe's `stages`; a recipe without `instruct.dataset` stops after pretrain."""
        return stage in self.recipe.stages and (stage != "instruct" or bool(self.recipe.instruct.dataset))

    def previous(self, stage: str) -> str:
        """The model point a training stage trains on: the last configured training stage before it, else the
        extended model (the method) or the base (the control)."""
        earlier = [s for s in self.training[:self.training.index(stage)] if self.configured(s)]
        return earlier[-1] if earlier else "extended" if self.grafted else "base"

    def eval_points(self) -> list[str]:
        have = {"base": True, "extended": self.grafted}
        points = ("base", "extended", *self.training)
        return [p for p in points if p in self.recipe.eval.stages and have.get(p, self.configured(p))]

    def replaced(self, stage: str) -> list[str]:
        """Keys of a training stage's own config that the run sets itself (the model the previous stage made, the
        prepared dataset the recipe names), so their values in that config are not used."""
        cfg = self.train[stage]
        return [key for key, value in (("model", cfg.model), ("data.dataset", cfg.data.dataset)) if value]


# ---------------------------------------------------------------- loading and checking
# `--smoke`: every training stage a few steps on a few texts, evaluation on a few examples, into OUT-smoke, so a
# recipe's whole path (checkpoints, export, eval, report) is tried in minutes before the real budget is spent.
# They merge into each stage's overrides by key; overrides given on the command line come after, and win.
SMOKE_TRAIN = ["max_steps=2", "checkpoint_every=1", "eval_every=0", "eval_batches=1", "log_every=1",
               "data.max_texts=200"]
SMOKE_EVAL_LIMIT = 4


def smoke_overrides(table: tuple[Stage, ...] = TABLE) -> list[str]:
    return [f"{s.name}.overrides=[{', '.join(SMOKE_TRAIN)}]" for s in table if s.trains] + \
        [f"eval.limit={SMOKE_EVAL_LIMIT}"]


def load_recipe(path: str | Path, overrides: Sequence[str] = (), *, base_dir: str | Path | None = None,
                smoke: bool = False, table: tuple[Stage, ...] = TABLE) -> Plan:
    """Read + validate a recipe and every config it names; raises one UserError line for the first problem.
    `table`: the stages it may have (`TABLE`)."""
    from langgraft.data.config import PrepareConfig
    from langgraft.lang import get_language
    from langgraft.train.config import TrainConfig

    recipe = load_config(recipe_class(table), path, [*smoke_overrides(table), *overrides] if smoke else overrides)
    src = str(path)
    _check_stages(recipe, src, table)
    if "model_extend" not in recipe.stages:
        _unused_surgery(recipe, src)
    # Absolute from here on: every stage records its inputs and config paths in its fingerprint, so the same
    # folder named relative to another directory (`langgraft demo --out runs/demo`, then `langgraft run`
    # inside it) must produce the same strings or every stage looks changed.
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else Path.cwd().resolve()
    if not recipe.out:
        raise UserError(f"{src}: out: required (the output folder)")
    get_language(recipe.lang)
    out = Path(recipe.out).expanduser()
    out = out if out.is_absolute() else base / out
    if smoke and not any(item.partition("=")[0].strip() == "out" for item in overrides):
        out = out.resolve()  # a name to add to even for `out: ..`
        out = out.with_name(out.name + "-smoke")  # beside the real run, never mixed into its stages
        recipe.out = str(out)
    plan = Plan(recipe, src, base, out, None, {}, table)
    plan.prepare = _sub_config(plan, PrepareConfig, "data", recipe.data.config, recipe.data.overrides)
    names = [ds.name for ds in plan.prepare.datasets]
    _check_tokenizer_dataset(plan, names)
    for stage in plan.training:
        section: TrainSection = getattr(recipe, stage)
        plan.train[stage] = _sub_config(plan, TrainConfig, stage, section.config, section.overrides)
        if recipe.seed is not None:
            plan.train[stage].seed = recipe.seed
        if not plan.configured(stage):
            continue
        _check_rows(plan, stage)
        for key in ("dataset", "replay"):
            name = getattr(section, key)
            if (name or key == "dataset") and name not in names:
                raise UserError(f"{src}: {stage}.{key} {name!r} is not a dataset of data.config "
                                f"(datasets: {', '.join(names) or 'none'})")
    return plan


def _check_stages(recipe: Any, src: str, table: tuple[Stage, ...]) -> None:
    names = [s.name for s in table]
    for name in recipe.stages:
        if name not in names:
            raise UserError(f"{src}: stages: {name!r} is not a stage (stages: {', '.join(names)})")
    if len(set(recipe.stages)) != len(recipe.stages) or \
            recipe.stages != sorted(recipe.stages, key=names.index):
        raise UserError(f"{src}: stages: list each stage once, in pipeline order ({', '.join(names)})")
    every = [s.name for s in table if s.graft]
    graft = [s for s in every if s in recipe.stages]
    if graft and len(graft) != len(every):
        raise UserError(f"{src}: stages: {', '.join(every)} go together (all: the method; none: the control on the "
                        f"base tokenizer); this recipe has only {', '.join(graft)}")


def _unused_surgery(recipe: Any, src: str) -> None:
    """The control arm has no surgery: settings of new rows are named as unused (one line), not silently ignored."""
    import sys

    given = [f"model_extend.{key}" for key, default in (("init", ModelExtendSection.init),
                                                          ("seed", ModelExtendSection.seed))
             if getattr(recipe.model_extend, key) != default]
    if given:
        print(f"langgraft run: {src}: {' and '.join(given)} unused: the recipe has no model_extend stage (no new "
              "rows to initialise)", file=sys.stderr)


def _check_rows(plan: Plan, stage: str) -> None:
    """The control arm has no new rows: its training stages train LoRA alone (rows: none) or every row; a
    distilling stage needs its teacher (train/distill.py)."""
    rows = plan.train[stage].rows
    if not plan.grafted and rows == "new":
        raise UserError(f"{plan.source}: {stage}: rows: new needs the model_extend stage (the base has no new "
                        "rows); the control arm trains with rows: none")
    if rows == "none" and stage == "align":
        raise UserError(f"{plan.source}: align: rows: none trains nothing there (align trains only embedding/head "
                        "rows); leave align out of stages")
    if plan.train[stage].objective == "distill":
        from langgraft.train.distill import check_distill

        try:
            check_distill(stage, rows)
        except UserError as exc:  # at load time, not after the stages before it have run
            raise UserError(f"{plan.source}: {stage}: {exc}") from None


def check_base_unextended(plan: Plan) -> None:
    """The control arm trains the base's own tokenizer: a base or tokenizer that `extend` made is one error line."""
    from langgraft.formats.new_tokens import NAME

    r = plan.recipe
    for key, value in (("model_extend.model", r.model_extend.model),
                       ("tokenizer_extend.base", r.tokenizer_extend.base)):
        if value and (plan.path(value) / NAME).is_file():
            raise UserError(f"{plan.source}: {key} {value}: an extended model or tokenizer ({NAME}); a recipe without "
                            f"the {', '.join(GRAFT)} stages trains the base on its own tokenizer: name the "
                            "unextended base")


def _check_tokenizer_dataset(plan: Plan, names: list[str]) -> None:
    name = plan.recipe.tokenizer.dataset
    if not name:
        return
    if name not in names:
        raise UserError(f"{plan.source}: tokenizer.dataset {name!r} is not a dataset of data.config "
                        f"(datasets: {', '.join(names) or 'none'})")
    ds = next(d for d in plan.prepare.datasets if d.name == name)
    if ds.validation_fraction >= 1:
        raise UserError(f"{plan.source}: tokenizer.dataset {name!r} has no train split (its validation_fraction "
                        f"is {ds.validation_fraction})")


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
        if model:
            from langgraft.hub import resolve_model

            resolve_model(plan.model_path(value), flag=f"{src}: {key}")  # a hub id must exist there (or offline)
            return
        resolved = str(plan.path(value))
        if not Path(resolved).exists():
            raise UserError(f"{src}: {key} {value}: not found (looked at {resolved})")

    if "tokenizer" in stages:
        if not r.tokenizer.input and not r.tokenizer.dataset:
            raise UserError(f"{src}: tokenizer.input: required (target-language text files), "
                            "or tokenizer.dataset (a dataset of data.config)")
        for i, item in enumerate(r.tokenizer.input):
            need(f"tokenizer.input[{i}]", item)
    if "tokenizer_extend" in stages:  # a local tokenizer: `tokenizer extend` does not download
        need("tokenizer_extend.base" if r.tokenizer_extend.base else "model_extend.model",
             r.tokenizer_extend.base or r.model_extend.model)
    if "model_extend" in stages:
        need("model_extend.model", r.model_extend.model, model=True)
    if not plan.grafted and set(stages) & set(plan.training):  # the control trains the base itself
        need("model_extend.model", r.model_extend.model, model=True)
        check_base_unextended(plan)
    if "data" in stages:
        root = plan.path(plan.prepare.root)
        if not root.is_dir():
            raise UserError(f"{src}: data: root {plan.prepare.root}: not a folder (looked at {root})")
    if set(stages) & {"model_extend", "align", "pretrain", "instruct", "report"}:
        for lang, text in r.eval.texts.items():
            need(f"eval.texts.{lang}", text)
        if r.eval.data_root:
            need("eval.data_root", r.eval.data_root)
        from langgraft.eval.tasks import resolve_tasks

        try:
            resolve_tasks(plan.task_items())
        except UserError as exc:
            raise UserError(f"{src}: eval.tasks: {exc}") from None
