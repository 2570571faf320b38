"""Training config discoverability: `train --show-config` from the dataclasses, the HF-name map in
docs/TRAINING.md, and the train recipes naming datasets the data recipe really produces."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Optional, get_type_hints

import pytest
import yaml

from langgraft.cli import main
from langgraft.config import describe, field_help, load_config
from langgraft.data.config import PrepareConfig
from langgraft.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _keys(cls: type, prefix: str = "") -> list[str]:
    hints = get_type_hints(cls)
    return [key for f in dataclasses.fields(cls)
            for key in (_keys(hints[f.name], f"{prefix}{f.name}.") if dataclasses.is_dataclass(hints[f.name])
                        else [f"{prefix}{f.name}"])]


def test_show_config_prints_every_key_with_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--show-config"])  # no --stage/--out needed, like --help
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == _keys(TrainConfig)  # every key, in the dataclasses' order, nothing else
    defaults = TrainConfig()
    for key, tp, default, meaning in describe(TrainConfig):
        value = defaults
        for part in key.split("."):
            value = getattr(value, part)
        assert default == value and meaning, key  # a field without a comment would show no meaning
        assert rows[key].rstrip().endswith(meaning), key
    assert re.search(r"^optim\.lr\s+float\s+0\.0002\s+learning rate of the LoRA adapters", rows["optim.lr"])
    assert re.search(r"^precision\s+auto\|bf16\|fp32\s+\"auto\"\s", rows["precision"])


@dataclasses.dataclass
class _Commented:
    plain: int = 1  # trailing comment
    # a comment block above
    # over two lines
    above: str = "x # not a comment"
    spanning: list[str] = dataclasses.field(
        default_factory=lambda: ["a"])  # trailing, after a default over two lines
    # a comment followed by a blank line belongs to nobody

    bare: Optional[float] = None
    stray: bool = False  # the last one


def test_field_help_reads_comments_in_every_position():
    assert field_help(_Commented) == {
        "plain": "trailing comment", "above": "a comment block above over two lines",
        "spanning": "trailing, after a default over two lines", "bare": "", "stray": "the last one"}
    assert [r[:3] for r in describe(_Commented)] == [
        ("plain", "int", 1), ("above", "str", "x # not a comment"), ("spanning", "list[str]", ["a"]),
        ("bare", "float or null", None), ("stray", "bool", False)]


def test_training_doc_maps_hf_trainer_names_to_real_keys():
    doc = (ROOT / "docs" / "TRAINING.md").read_text(encoding="utf-8")
    table = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].startswith("`"):
            table[cells[0].strip("`").split("` / `")[0]] = cells[2].strip("`")
    keys = set(_keys(TrainConfig)) | {"--out", "--resume"}
    for hf in ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "save_steps",
               "logging_steps", "output_dir", "num_train_epochs", "warmup_ratio"):
        assert table.get(hf) in keys, hf
    assert all(v in keys for v in table.values()), {k: v for k, v in table.items() if v not in keys}


def _first_line_args(path: Path) -> list[str]:
    return shlex.split(path.read_text(encoding="utf-8").splitlines()[0].lstrip("# "))


@pytest.mark.parametrize("stage,kind", [("align", "bilingual"), ("pretrain", "monolingual"),
                                        ("instruct", "instructions")])
def test_train_recipes_name_datasets_the_data_recipe_produces(stage, kind):
    data_recipe = ROOT / "recipes" / "data" / "persian.yaml"
    args = _first_line_args(data_recipe)
    data_out = args[args.index("--out") + 1]
    produced = {f"{data_out}/{d.name}": d.kind for d in load_config(PrepareConfig, data_recipe).datasets}
    recipe = ROOT / "recipes" / "train" / f"{stage}.yaml"
    dataset = yaml.safe_load(recipe.read_text(encoding="utf-8"))["data"]["dataset"]
    assert produced.get(dataset) == kind, (dataset, produced)
    command = _first_line_args(recipe)
    assert f"data.dataset={dataset}" in command and command[command.index("--stage") + 1] == stage
