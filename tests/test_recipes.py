"""Every shipped YAML (recipes/**, the demo's) loads and validates with the loader of the command its first comment
line names, and that command parses; a run recipe's configs, tasks and data inputs resolve; the SmolLM2 recipe is
the whole method on a local base."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from helpers import ROOT

from langgraft.cli import build_parser
from langgraft.config import load_config
from langgraft.data.config import PrepareConfig
from langgraft.data.readers import plan_units
from langgraft.demo import _materialise
from langgraft.eval.tasks import load_task
from langgraft.pipeline.recipe import check_inputs, load_recipe
from langgraft.pipeline.table import EVAL_POINTS
from langgraft.textfiles import expand_paths
from langgraft.train.config import TrainConfig

DEMO = ROOT / "src/langgraft/demo"


def shipped_yamls() -> list[Path]:
    """Every YAML shipped for users to run: recipes/** and the demo's recipe, data config and tasks."""
    return sorted((ROOT / "recipes").rglob("*.yaml")) + sorted(DEMO.glob("*.yaml"))


def _command(path: Path) -> list[str]:
    """The command a shipped YAML's first comment line gives, without the notes after it ("[...]", "   (...)")."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    return shlex.split(first[2:].split("   ")[0].split(" [")[0]) if first.startswith("# ") else []


def _check_run_recipe(recipe: Path, overrides: list[str], base_dir: Path) -> None:
    plan = load_recipe(recipe, overrides, base_dir=base_dir)
    # the model stages need the base model, which CI does not have
    check_inputs(plan, [s for s in ("tokenizer", "data") if s in plan.recipe.stages])
    for stage in ("align", "pretrain", "instruct"):
        assert plan.train[stage].max_steps >= 0


def _check_data_config(path: Path, overrides: list[str], root: Path) -> None:
    """Loads, and every source and evaluation set it names exists under `root`."""
    cfg = load_config(PrepareConfig, path, [*overrides, f"root={root}"])
    for ds in cfg.datasets:
        assert plan_units(ds, root, cfg.chunk_mb << 20), ds.name
    for i, eval_set in enumerate(cfg.leak_guard.eval_sets):
        assert expand_paths(eval_set.source.path, root, f"leak_guard.eval_sets[{i}]")


@pytest.mark.parametrize("path", shipped_yamls(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_loads_with_the_command_its_first_line_names(path: Path, data_dir, tmp_path):
    argv = _command(path)
    if not argv:  # a demo task, read by `eval --tasks`; the demo copies its data next to it
        assert (path.parent / load_task(path).data.path).is_file()
        return
    if argv[:2] == ["accelerate", "launch"]:  # an Accelerate config (it rejects unknown keys) + a langgraft train
        assert ROOT / argv[argv.index("--config_file") + 1] == path
        ClusterConfig.from_yaml_file(str(path))
        argv = ["langgraft", *argv[argv.index("-m") + 2:]]
    assert argv[0] == "langgraft", argv
    args = build_parser().parse_args(argv[1:])
    if args.verb == "train":
        assert args.stage in ("align", "pretrain", "instruct")
        cfg = load_config(TrainConfig, ROOT / args.config, args.overrides)
        assert cfg.model and cfg.data.dataset
    elif args.verb == "data":
        assert Path(args.config).name == path.name
        # the demo copies its corpus next to data.yaml's `root`; the recipes read the shared data
        _check_data_config(path, args.overrides, DEMO if path.parent == DEMO else data_dir)
    elif args.verb == "run":
        assert ROOT / args.recipe == path
        _check_run_recipe(path, args.overrides, ROOT)
    elif args.verb == "demo":  # the recipe as `langgraft demo` lays it out
        _materialise(tmp_path, lambda line: None)
        _check_run_recipe(tmp_path / path.name, [], tmp_path)
    else:
        pytest.fail(f"{path}: no check for `{' '.join(argv)}`")


def test_smollm2_recipe_is_the_whole_method_on_the_imported_base(data_dir):
    plan = load_recipe(ROOT / "recipes/smollm2-135m-persian.yaml", base_dir=ROOT)
    r = plan.recipe
    assert r.model_extend.model == r.tokenizer_extend.base  # one imported folder: its own tokenizer is extended
    assert r.tokenizer.vocab_size == 20000
    kinds = {ds.name: ds.kind for ds in plan.prepare.datasets}
    assert kinds[r.tokenizer.dataset] == "monolingual"  # pieces from the cleaned, leak-guarded Persian train split
    assert r.eval.stages == list(EVAL_POINTS) and r.eval.chat_stages == ["instruct"]
    assert (kinds[r.align.dataset], kinds[r.pretrain.dataset], kinds[r.instruct.dataset]) == (
        "bilingual", "monolingual", "instructions")
    assert plan.train["pretrain"].lora.r == 8 and plan.train["pretrain"].rows == "new"
    tokens = {stage: cfg.max_steps * cfg.micro_batch_size * cfg.grad_accum * cfg.data.block_size
              for stage, cfg in plan.train.items()}
    assert all(n > 0 for n in tokens.values()) and sum(tokens.values()) <= 900_000  # ~1 h at ~215 tokens/s
