"""Stages as data: a new stage of `langgraft run` is one row of `table.TABLE` plus its build function."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from langgraft.config import describe, to_dict
from langgraft.errors import UserError
from langgraft.pipeline.recipe import load_recipe
from langgraft.pipeline.table import TABLE, Stage, recipe_class
from langgraft.pipeline.run import run_recipe
from langgraft.pipeline.stages import main_only
from langgraft.rundir import read_manifest, run_stage


@dataclass
class GreetSection:
    greeting: str = "salaam"  # what the toy stage writes
    times: int = 1  # how often


def build_greet(plan) -> bool:
    section = plan.recipe.greet

    def work(tmp):
        (tmp / "greeting.txt").write_text((section.greeting + "\n") * section.times, encoding="utf-8")
        return {"lines": section.times}

    return not run_stage(plan.stage_dir("greet"), stage="greet", config=to_dict(section), inputs=[],
                         work=work).skipped


# the one edit a new stage takes: its row, here after the data stage
WITH_GREET = (TABLE[0], Stage("greet", GreetSection, "greet", main_only(build_greet), help="a toy stage"),
              *TABLE[1:])


def _recipe(tmp_path, **greet) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "run"), "stages": ["greet"], "greet": greet}),
                    encoding="utf-8")
    return str(path)


def test_a_toy_stage_runs_from_its_row_alone(tmp_path):
    recipe = _recipe(tmp_path, greeting="dorood", times=2)
    first = run_recipe(recipe, table=WITH_GREET)
    assert first["stages"] == {"greet": {"status": "ran", "seconds": first["stages"]["greet"]["seconds"]}}
    out = tmp_path / "run" / "greet"
    assert (out / "greeting.txt").read_text(encoding="utf-8") == "dorood\ndorood\n"
    assert read_manifest(out)["config"] == {"greeting": "dorood", "times": 2}
    assert run_recipe(recipe, table=WITH_GREET)["stages"]["greet"]["status"] == "skipped"
    assert run_recipe(recipe, ["greet.times=3"], table=WITH_GREET)["stages"]["greet"]["status"] == "ran"
    again = run_recipe(recipe, ["greet.times=3"], start="greet", stop="greet", table=WITH_GREET)
    assert again["stages"]["greet"]["status"] == "skipped"
    assert (out / "greeting.txt").read_text(encoding="utf-8") == "dorood\n" * 3


def test_the_recipe_schema_and_stage_order_come_from_the_table(tmp_path):
    keys = {row[0] for row in describe(recipe_class(WITH_GREET))}
    assert {"greet.greeting", "greet.times"} <= keys
    assert not any(k.startswith("greet.") for k in {row[0] for row in describe(recipe_class(TABLE))})
    plan = load_recipe(_recipe(tmp_path), table=WITH_GREET)
    assert plan.names[:2] == ("data", "greet") and plan.recipe.greet.greeting == "salaam"
    with pytest.raises(UserError, match="unknown key greet.colour"):
        load_recipe(_recipe(tmp_path, colour="green"), table=WITH_GREET)
    with pytest.raises(UserError, match="unknown key greet"):  # the shipped table has no such stage
        load_recipe(_recipe(tmp_path))
    bad = tmp_path / "order.yaml"
    bad.write_text(yaml.safe_dump({"out": "x", "stages": ["greet", "data"]}), encoding="utf-8")
    with pytest.raises(UserError, match="pipeline order"):
        load_recipe(str(bad), table=WITH_GREET)


def test_from_a_stage_needs_the_earlier_rows_outputs(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "run"), "stages": ["greet", "report"]}), encoding="utf-8")
    with pytest.raises(UserError, match="stage greet has no finished output"):
        run_recipe(str(path), start="report", table=WITH_GREET)
