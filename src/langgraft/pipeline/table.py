"""The stage table of `langgraft run` and the recipe schema read from it.

`TABLE` is the pipeline as data: a row per stage (its recipe section, the folder that marks it finished, its build
function in `stages.py`, what kind of stage it is); the `Recipe` schema, the stage order, `--from/--to` and the
earlier-output checks are all read from it, so a new stage is one row plus its build function. A section holds its
verb's own options (the same dataclass the verb's flags are made from), or the path of the verb's own YAML config
plus dotted overrides.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field as _field, make_dataclass
from typing import Any, Callable, Literal, Optional, Sequence

from langgraft.errors import UserError
from langgraft.eval.options import EvalOptions
from langgraft.lang import DEFAULT_TARGET
from langgraft.model.options import ExtendOptions
from langgraft.pipeline import stages as build
from langgraft.tokenizer.train import TokenizerTrainOptions

Point = Literal["base", "extended", "align", "pretrain", "instruct"]  # a model the recipe can evaluate


# ---------------------------------------------------------------- recipe sections
@dataclass
class TokenizerSection(TokenizerTrainOptions):
    input: list[str] = _field(default_factory=list)  # target-language text files (.txt a document per line, .jsonl)
    # name of a dataset of data.config whose prepared train split (OUT/data/NAME) the tokenizer trains on, with
    # any `input` files: the data stage's cleaning and leak guard then apply to the tokenizer's text too
    dataset: str = ""


@dataclass
class TokenizerExtendSection:
    base: str = ""  # base tokenizer (HF dir, tokenizer.model, vocab.json+merges.txt dir); default: model_extend.model


@dataclass
class DataSection:
    config: str = ""  # a `langgraft data prepare` YAML (e.g. recipes/data/persian.yaml)
    overrides: list[str] = _field(default_factory=list)  # dotted overrides of that config, e.g. [workers=8]


@dataclass
class ModelExtendSection(ExtendOptions):
    model: str = ""  # the base causal LM: local HF dir (or hub id, which needs network)


@dataclass
class TrainSection:
    # a `langgraft train` YAML (recipes/train/{align,pretrain,instruct}.yaml); empty = defaults. Its `model` and
    # `data.dataset` are set by the run (the previous stage's model, OUT/data/<dataset>), which says so when they
    # hold a value
    config: str = ""
    dataset: str = ""  # name of the prepared dataset in OUT/data/ to train on (instruct: empty = no instruct stage)
    replay: str = ""  # pretrain: name of a prepared English dataset mixed in (set data.replay_fraction)
    overrides: list[str] = _field(default_factory=list)  # dotted overrides, e.g. [max_steps=100, optim.lr=1e-4]


# ---------------------------------------------------------------- the stage table
@dataclass(frozen=True)
class Stage:
    name: str
    section: Optional[type]  # its recipe section (None: the stage has no settings)
    output: str  # the folder under OUT whose manifest says the stage has finished
    # build(plan, name, ranks) -> True when it produced a new output (False: up to date); every process of a
    # launch calls it (`stages.main_only` runs a stage on the main process while the others wait)
    build: Callable[..., bool]
    graft: bool = False  # part of the vocabulary graft: a recipe has all such stages (the method) or none (control)
    trains: bool = False  # a training stage: evaluated as a model point, run by every process
    help: str = ""  # the section's meaning in the recipe schema


# data first: the tokenizer may train on a prepared (cleaned, leak-guarded) train split, and the data stage takes
# its normaliser from the recipe's tokenizer section, not from the trained tokenizer
TABLE: tuple[Stage, ...] = (
    Stage("data", DataSection, "data", build.main_only(build.build_data), help="`data prepare`: the corpora"),
    Stage("tokenizer", TokenizerSection, "tokenizer", build.main_only(build.build_tokenizer), graft=True,
          help="`tokenizer train`: the target-language SentencePiece model"),
    Stage("tokenizer_extend", TokenizerExtendSection, "tokenizer_extend",
          build.main_only(build.build_tokenizer_extend), graft=True,
          help="`tokenizer extend`: its pieces merged into the base tokenizer"),
    Stage("model_extend", ModelExtendSection, "model_extend", build.build_model_extend, graft=True,
          help="`extend`: the base model resized to the merged tokenizer (the control arm's base: model)"),
    Stage("align", TrainSection, "align/export", build.build_training, trains=True,
          help="`train --stage align`: embeddings and head on bilingual text"),
    Stage("pretrain", TrainSection, "pretrain/export", build.build_training, trains=True,
          help="`train --stage pretrain`: LoRA and rows on monolingual text"),
    Stage("instruct", TrainSection, "instruct/export", build.build_training, trains=True,
          help="`train --stage instruct`: optional, set instruct.dataset to run it"),
    Stage("report", None, "report", build.main_only(build.build_report)),
)
STAGES = tuple(s.name for s in TABLE)
GRAFT = tuple(s.name for s in TABLE if s.graft)
EVAL_POINTS = ("base", "extended", *(s.name for s in TABLE if s.trains))


@dataclass
class EvalSection(EvalOptions):
    tasks: list[str] = _field(default_factory=lambda: ["fa_core", "en_core"])  # task names, suites or .yaml files
    stages: list[Point] = _field(
        default_factory=lambda: list(EVAL_POINTS))  # which models to evaluate (instruct: when it is configured)
    # stages whose prompts go through the model's chat template (e.g. [instruct]); `chat: true` means all
    chat_stages: list[Point] = _field(default_factory=list)
    data_root: str = ""  # task data root (default: $LANGGRAFT_DATA or ../shared/data)
    texts: dict[str, str] = _field(default_factory=dict)  # lang -> held-out text (.txt/.jsonl) for the tokenizer
    # report: fertility base vs extended, and (for languages other than `lang`) the ids-unchanged check


@functools.lru_cache(maxsize=None)
def recipe_class(table: tuple[Stage, ...] = TABLE) -> type:
    """The recipe schema of a stage table: its common keys, a section per stage that has one, and `eval`."""
    def key(name: str, tp: Any, help_text: str, **default: Any) -> tuple:
        return name, tp, _field(metadata={"help": help_text}, **default)

    names = [s.name for s in table]
    return make_dataclass("Recipe", [
        key("out", str, "output folder: one subfolder per stage", default=""),
        key("lang", str, "the language being grafted", default=DEFAULT_TARGET),
        key("stages", list[str], "the stages this recipe has, in pipeline order; leaving out "
            f"{', '.join(s.name for s in table if s.graft)} makes the control arm: model_extend.model is then the "
            "base, trained as it is (training stages: rows: none)", default_factory=lambda: list(names)),
        key("seed", Optional[int], "when set, the seed of every training stage (data order, LoRA init, dropout)",
            default=None),
        *(key(s.name, s.section, s.help, default_factory=s.section) for s in table if s.section is not None),
        key("eval", EvalSection, "which models are evaluated on which tasks", default_factory=EvalSection),
    ])


Recipe = recipe_class()


def select_stages(start: str | None, stop: str | None, stages: Sequence[str] = STAGES,
                  names: Sequence[str] = STAGES) -> list[str]:
    """The recipe's `stages` from `start` to `stop` (names of stages the recipe has); `names`: every stage of
    its table, in order."""
    names = list(names)
    for flag, name in (("--from", start), ("--to", stop)):
        if name is not None and name not in names:
            raise UserError(f"{flag} {name}: not a stage (stages: {', '.join(names)})")
        if name is not None and name not in stages:
            raise UserError(f"{flag} {name}: not a stage of this recipe (its stages: {', '.join(stages)})")
    i = names.index(start) if start else 0
    j = names.index(stop) if stop else len(names) - 1
    if i > j:
        raise UserError(f"--from {start} comes after --to {stop}")
    return [s for s in names[i:j + 1] if s in stages]
