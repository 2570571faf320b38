"""Every shipped `langgraft run` recipe loads with every config it names, its first comment line is the command that
runs it, its tasks resolve and its data inputs exist; the SmolLM2 recipe is the whole method on a local base."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraft.recipe import EVAL_POINTS, check_inputs, load_recipe
from test_leak_guard import ROOT, pipeline_recipes


@pytest.mark.parametrize("path", pipeline_recipes(), ids=lambda p: p.name)
def test_shipped_recipe_loads_and_its_data_inputs_exist(path: Path, data_dir):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# langgraft run recipes/{path.name}"), first
    plan = load_recipe(path, base_dir=ROOT)
    check_inputs(plan, ["tokenizer", "data"])  # the model stages need the base model, which CI does not have
    for stage in ("align", "pretrain", "instruct"):
        assert plan.train[stage].max_steps >= 0


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
