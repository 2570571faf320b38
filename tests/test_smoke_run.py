"""The demo without any data but its own, `langgraft run RECIPE --smoke` (the whole recipe, short, into
OUT-smoke), and recipe overrides of a stage's override list, which merge by key instead of replacing the list."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import langgraft

from langgraft.cli import main
from langgraft.config import apply_override
from langgraft.errors import UserError
from langgraft.pipeline.recipe import SMOKE_EVAL_LIMIT, load_recipe
from langgraft.pipeline.table import STAGES


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    """`langgraft demo` as an outside user runs it: langgraft's own files only (a copy of the package, so nothing
    next to this checkout is found), LANGGRAFT_DATA pointing nowhere, no ../shared beside the working folder."""
    top = tmp_path_factory.mktemp("alone")
    package = top / "a" / "pkg"
    shutil.copytree(Path(langgraft.__file__).parent, package / "langgraft",
                    ignore=shutil.ignore_patterns("__pycache__"))
    work = top / "a" / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(package), "LANGGRAFT_DATA": str(top / "nowhere"), "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([sys.executable, "-c", "import langgraft.eval.tasks as t; print(t.__file__); "
                            "print(t.default_data_root().exists())"], cwd=work, env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert probe == [str(package / "langgraft" / "eval" / "tasks.py"), "False"]  # no real data reachable
    done = subprocess.run([sys.executable, "-m", "langgraft", "demo", "--out", "demo"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report: " in done.stdout and "demo_bpc_fa bpc: base" in done.stdout
    assert not (top / "nowhere").exists() and not (top / "a" / "shared").exists()
    return work / "demo"


def test_a_stage_override_list_merges_by_key(demo_folder):
    recipe = demo_folder / "recipe.yaml"
    plain = load_recipe(recipe, base_dir=demo_folder)
    merged = load_recipe(recipe, ["align.overrides=[max_steps=100, seed=7]"], base_dir=demo_folder)
    align, before = merged.train["align"], plain.train["align"]
    assert (align.max_steps, align.seed) == (100, 7)
    # everything else the recipe set for align is still there (replacing the list dropped all of it)
    assert (align.data.block_size, align.micro_batch_size, align.optim.lr, align.checkpoint_every, align.precision) \
        == (before.data.block_size, before.micro_batch_size, before.optim.lr, before.checkpoint_every, "fp32") \
        == (64, 4, 1e-2, 10, "fp32")
    assert merged.train["pretrain"] == plain.train["pretrain"]  # other stages untouched
    # a bare item (no brackets) and two overrides of one list both merge; the later one wins
    twice = load_recipe(recipe, ["pretrain.overrides=max_steps=5", "pretrain.overrides=[max_steps=6, lora.r=4]"],
                        base_dir=demo_folder)
    assert (twice.train["pretrain"].max_steps, twice.train["pretrain"].lora.r) == (6, 4)
    assert twice.train["pretrain"].optim.lr == plain.train["pretrain"].optim.lr
    # an explicit empty list still clears it: the stage falls back to its config's defaults
    cleared = load_recipe(recipe, ["instruct.overrides=[]"], base_dir=demo_folder)
    assert cleared.train["instruct"].max_steps == 0 and cleared.train["instruct"].data.block_size == 512


@pytest.mark.parametrize("item,message", [("align.overrides=[max_steps]", "item 'max_steps' must look like key=value"),
                                          ("align.overrides={a: 1}", "must be a list of key=value items"),
                                          ("pretrain.overrides=[7]", "item 7 must look like key=value")])
def test_a_bad_override_item_is_one_line_naming_it(demo_folder, item, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        load_recipe(demo_folder / "recipe.yaml", [item], base_dir=demo_folder)


def test_merge_keeps_the_first_position_and_the_last_value():
    raw = {"s": {"overrides": ["a=1", "b=2", "c=3"]}}
    apply_override(raw, "s.overrides=[b=9, d=4]")
    assert raw["s"]["overrides"] == ["a=1", "b=9", "c=3", "d=4"]
    raw = {"s": {}}
    apply_override(raw, "s.overrides=[x=1]")  # nothing to merge with: set as given
    assert raw["s"]["overrides"] == ["x=1"]


def test_smoke_plan_shortens_every_training_stage_and_eval_and_moves_out(demo_folder):
    recipe = demo_folder / "recipe.yaml"
    plain = load_recipe(recipe, base_dir=demo_folder)
    smoke = load_recipe(recipe, base_dir=demo_folder, smoke=True)
    assert smoke.out == demo_folder.resolve().with_name("demo-smoke") and plain.out == demo_folder.resolve()
    for stage in ("align", "pretrain", "instruct"):
        cfg, full = smoke.train[stage], plain.train[stage]
        assert (cfg.max_steps, cfg.checkpoint_every, cfg.eval_every, cfg.data.max_texts) == (2, 1, 0, 200)
        assert (cfg.data.block_size, cfg.optim.lr, cfg.precision) == (full.data.block_size, full.optim.lr,
                                                                      full.precision)  # merged, not replaced
    assert smoke.recipe.eval.limit == SMOKE_EVAL_LIMIT
    # the command line still wins over the smoke settings, out= included
    mine = load_recipe(recipe, ["align.overrides=[max_steps=3]", "out=elsewhere"], base_dir=demo_folder, smoke=True)
    assert (mine.train["align"].max_steps, mine.train["align"].checkpoint_every) == (3, 1)
    assert mine.out == demo_folder / "elsewhere"


def test_smoke_run_of_the_demo_runs_every_stage_short(demo_folder, capsys, monkeypatch):
    before = {str(m): m.stat().st_mtime_ns for m in demo_folder.rglob("manifest.json")}
    monkeypatch.chdir(demo_folder)
    assert main(["run", "recipe.yaml", "--smoke"]) == 0
    out = demo_folder.with_name("demo-smoke")
    assert "report: " in capsys.readouterr().out
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert [s for s in STAGES if pipeline["stages"][s]["status"] == "ran"] == list(STAGES)
    for stage in ("align", "pretrain", "instruct"):
        summary = json.loads((out / stage / "train" / "manifest.json").read_text())["summary"]
        assert summary["steps"] == 2, (stage, summary)
    for point in ("base", "extended", "align", "pretrain", "instruct"):
        results = json.loads((out / "eval" / point / "results.json").read_text())
        counts = {name: task["n"] for name, task in results["tasks"].items()}
        assert len(counts) == 3 and 0 < max(counts.values()) <= SMOKE_EVAL_LIMIT, (point, counts)
    assert {str(m): m.stat().st_mtime_ns for m in demo_folder.rglob("manifest.json")} == before  # real run untouched


def test_prepared_instructions_are_a_trl_conversational_dataset(demo_folder):
    """`data prepare`'s instruction splits load with `datasets` as they are, and their `messages` column is the
    conversational format TRL's SFTTrainer takes (checked by TRL itself where it is installed)."""
    from datasets import load_dataset

    info = json.loads((demo_folder / "data" / "instructions" / "dataset.json").read_text())
    files = {split: [str(demo_folder / "data" / "instructions" / f) for f in part["files"]]
             for split, part in info["splits"].items()}
    ds = load_dataset("parquet", data_files=files)
    assert ds["train"].num_rows == info["splits"]["train"]["records"] > 0
    for row in ds["train"]:
        turns = row["messages"]
        assert [t["role"] for t in turns][-2:] == ["user", "assistant"] and all(t["content"] for t in turns)
    import trl.data_utils as trl  # in the test extra: the check runs wherever the suite does
    assert all(trl.is_conversational(row) for row in ds["train"])
