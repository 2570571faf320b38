"""The control arm as a recipe: the demo's control.yaml (no tokenizer/extend stages, rows: none) runs the same data,
training stages and evaluation on the base tokenizer; its report names tokens, characters seen and seconds; bad
recipes are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from langgraft.demo import _materialise, build_base
from langgraft.errors import UserError
from langgraft.pipeline.recipe import load_recipe
from langgraft.pipeline.run import run_recipe
from helpers import make_extended_tokenizer


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo folder with its base built (the method's own stages are not needed by the control)."""
    out = tmp_path_factory.mktemp("control") / "demo"
    _materialise(out, lambda line: None)
    build_base(out / "base", out / "corpus" / "en.txt")
    return out


def test_control_recipe_runs_on_the_demo(demo):
    result = run_recipe(demo / "control.yaml", base_dir=demo, log=lambda line: None)
    assert list(result["stages"]) == ["data", "pretrain", "instruct", "report"]
    out = demo / "control"
    assert not any((out / s).exists() for s in ("tokenizer", "tokenizer_extend", "model_extend", "align"))
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["base", "instruct", "pretrain"]
    adapter = json.loads((out / "pretrain" / "train" / "adapter" / "adapter_config.json").read_text())
    assert not adapter.get("trainable_token_indices")  # LoRA alone
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["arm"] == "control" and summary["stages"] == ["base", "pretrain", "instruct"]
    pre = summary["training"]["pretrain"]
    assert pre["tokens"] == 40 * 4 * 64 and pre["lang"] == "fa" and pre["seconds"] > 0
    manifest = json.loads((out / "pretrain" / "train" / "manifest.json").read_text())["summary"]
    assert pre["chars_seen"] == round(pre["tokens"] * manifest["train_chars"] / manifest["train_tokens"])
    assert any(line.startswith("pretrain (control): 10,240 training tokens, ") and "fa characters seen" in line
               for line in summary["lines"])
    assert summary["intrinsic"]["fa"]["demo_bpc_fa"]["values"]["pretrain"] < \
        summary["intrinsic"]["fa"]["demo_bpc_fa"]["values"]["base"]
    # text per second for the base and every trained stage, in the summary and the model card
    speed = next(line for line in summary["lines"] if line.startswith("fa text per second, scoring (demo_bpc_fa)"))
    assert all(f"{m} " in speed for m in ("base", "pretrain", "instruct"))
    card = (out / "report" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "### Text per second" in card and "| demo_bpc_fa | fa | scoring | base |" in card
    # the base the control trained is bit-for-bit the demo base: its vocabulary is not extended
    base_vocab = json.loads((demo / "base" / "config.json").read_text())["vocab_size"]
    assert json.loads((out / "instruct" / "export" / "model" / "config.json").read_text())["vocab_size"] == base_vocab


def _recipe(demo: Path, name: str, **changes) -> Path:
    doc = yaml.safe_load((demo / "control.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        node = doc
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = demo / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("changes, message", [
    ({"stages": ["data", "tokenizer", "pretrain", "report"]},
     r"stages: tokenizer, tokenizer_extend, model_extend go together .* has only tokenizer$"),
    ({"stages": ["data", "report", "pretrain"]}, r"stages: list each stage once, in pipeline order"),
    ({"stages": ["data", "pretrain", "pretrain"]}, r"stages: list each stage once"),
    ({"stages": ["data", "finetune"]}, r"stages: 'finetune' is not a stage"),
    ({"pretrain.overrides": ["max_steps=2"]}, r"pretrain: rows: new needs the model_extend stage"),
    ({"stages": ["data", "align", "pretrain", "report"], "align": {"dataset": "en_fa"}},
     r"align: rows: new needs the model_extend stage"),
    ({"pretrain.overrides": ["rows=none", "objective=distill"]},
     r"pretrain: objective: distill: --stage pretrain trains the transformer \(LoRA\)"),
])
def test_bad_control_recipes_are_one_line(demo, changes, message):
    with pytest.raises(UserError, match=message) as err:
        load_recipe(_recipe(demo, "bad.yaml", **changes), base_dir=demo)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key", ["model_extend.model", "tokenizer_extend.base"])
def test_control_pointed_at_an_extended_tokenizer_is_one_line(demo, data_dir, key):
    extended = make_extended_tokenizer(data_dir, "gpt2", demo / "ext-tok", n_new=5)
    if key == "tokenizer_extend.base":  # a real base model, an extended tokenizer beside it
        recipe = _recipe(demo, "bad-ext.yaml", **{key: str(extended)})
    else:
        model = demo / "ext-model"
        shutil.copytree(demo / "base", model, dirs_exist_ok=True)
        shutil.copy2(extended / "new_tokens.json", model / "new_tokens.json")
        recipe = _recipe(demo, "bad-ext.yaml", **{key: str(model), "out": "bad-ext"})
    with pytest.raises(UserError, match=rf"{key} .*: an extended model or tokenizer \(new_tokens.json\); a recipe "
                                        r"without the tokenizer, tokenizer_extend, model_extend stages") as err:
        run_recipe(recipe, base_dir=demo, log=lambda line: None)
    assert "\n" not in str(err.value) and not (demo / "bad-ext").exists()


def test_control_warns_about_surgery_settings_and_stage_slices(demo, capfd):
    load_recipe(_recipe(demo, "init.yaml", **{"model_extend.init": "random"}), base_dir=demo)
    assert [line for line in capfd.readouterr().err.splitlines() if "unused" in line] == [
        f"langgraft run: {demo / 'init.yaml'}: model_extend.init unused: the recipe has no model_extend stage "
        "(no new rows to initialise)"]
    with pytest.raises(UserError, match=r"--from align: not a stage of this recipe \(its stages: data, pretrain, "
                                        r"instruct, report\)"):
        run_recipe(demo / "control.yaml", base_dir=demo, start="align", log=lambda line: None)


def test_recipe_seed_sets_every_training_stage(demo):
    plan = load_recipe(_recipe(demo, "seeded.yaml", seed=7), base_dir=demo)
    assert [plan.train[s].seed for s in ("align", "pretrain", "instruct")] == [7, 7, 7]
    plan = load_recipe(demo / "control.yaml", base_dir=demo)
    assert plan.train["pretrain"].seed == 0
