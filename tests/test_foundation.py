"""Foundation: CLI table, typed config with dotted overrides, atomic run directories with manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from langgraft.cli import VERBS, build_parser, main
from langgraft.config import load_config, to_dict
from langgraft.errors import UserError
from langgraft.rundir import read_manifest, run_stage


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("verb", sorted(VERBS), ids=" ".join)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*verb, "--help"])
    assert exit_info.value.code == 0
    assert f"langgraft {' '.join(verb)}" in capsys.readouterr().out


def test_python_dash_m_and_console_script_agree():
    out = subprocess.run([sys.executable, "-m", "langgraft", "--help"], capture_output=True, text=True, check=True)
    assert "tokenizer" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "langgraft", "tokenizer", "train"], capture_output=True, text=True)
    assert missing.returncode == 2 and "--input" in missing.stderr


def _defaults(*verb: str) -> dict:
    """dest -> default of every flag of `langgraft VERB`."""
    parser = build_parser()
    for word in verb:
        parser = next(a for a in parser._actions if a.dest in ("verb", "action")).choices[word]
    return {a.dest: a.default for a in parser._actions}


def test_help_imports_no_torch():
    code = "import sys; from langgraft.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------ config
@dataclass
class Lora:
    r: int = 8
    """LoRA rank."""
    alpha: float = 32.0
    """LoRA scaling numerator."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names to adapt."""


@dataclass
class Stage:
    name: str
    """Stage name (required)."""
    rows: Literal["all", "new"] = "all"
    """Which embedding rows train."""
    lr: float = 2e-4
    """Learning rate."""
    bf16: bool = True
    """Autocast to bf16 where supported."""
    data: Path | None = None
    """Dataset directory."""
    lora: Lora = field(default_factory=Lora)
    """Adapter settings."""


def test_yaml_plus_dotted_overrides(tmp_path):
    cfg = tmp_path / "stage.yaml"
    cfg.write_text("name: pretrain\nlr: 1e-4\nlora:\n  r: 16\n")
    stage = load_config(Stage, cfg, ["lora.alpha=64", "rows=new", "lora.targets=[q_proj,k_proj]", "data=/d"])
    assert stage == Stage(name="pretrain", rows="new", lr=1e-4, data=Path("/d"),
                          lora=Lora(r=16, alpha=64.0, targets=["q_proj", "k_proj"]))
    assert to_dict(stage)["lora"] == {"r": 16, "alpha": 64.0, "targets": ["q_proj", "k_proj"]}
    assert load_config(Stage, None, ["name=x", "lora.targets=o_proj"]).lora.targets == ["o_proj"]


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("name: a\nlearning_rate: 1\n", [], "unknown key learning_rate"),
        ("name: a\n", ["lora.rank=4"], "unknown key lora.rank"),
        ("name: a\n", ["lora.r=four"], "lora.r must be int"),
        ("name: a\n", ["bf16=3"], "bf16 must be bool"),
        ("name: a\n", ["rows=some"], "rows must be one of all, new"),
        ("lr: 1\n", [], "missing required key name"),
        ("name: a\nlora: 3\n", [], "lora must be a mapping"),
        ("name: [a\n", [], "stage.yaml:2: invalid YAML"),
        ("name: a\n", ["lr"], "section.key=value"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, overrides, needle):
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(Stage, cfg, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ run dirs
def test_stage_writes_manifest_and_skips_matching_rerun(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("سلام\n")
    calls = []

    def work(tmp: Path) -> dict:
        calls.append(tmp)
        (tmp / "out.txt").write_text(src.read_text().upper())
        return {"lines": 1}

    out = tmp_path / "stage"
    first = run_stage(out, stage="demo", config={"k": 1}, inputs=[src], work=work)
    assert not first.skipped and (out / "out.txt").exists()
    manifest = read_manifest(out)
    assert manifest["summary"] == {"lines": 1} and manifest["config"] == {"k": 1}
    assert set(manifest["inputs"]) == {str(src)} and len(manifest["inputs"][str(src)]) == 64
    assert manifest["versions"]["torch"] and manifest["wall_time_s"] >= 0 and "git_revision" in manifest
    assert run_stage(out, stage="demo", config={"k": 1}, inputs=[src], work=work).skipped
    assert len(calls) == 1
    src.write_text("changed\n")  # a changed input re-runs the stage and replaces the output
    assert not run_stage(out, stage="demo", config={"k": 1}, inputs=[src], work=work).skipped
    assert (out / "out.txt").read_text() == "CHANGED\n" and len(calls) == 2
    assert not run_stage(out, stage="demo", config={"k": 2}, inputs=[src], work=work).skipped


def test_failed_stage_leaves_nothing_and_keeps_previous_output(tmp_path):
    out = tmp_path / "stage"
    run_stage(out, stage="demo", config={}, inputs=[], work=lambda tmp: (tmp / "a").write_text("old") and None)

    def broken(tmp: Path) -> dict:
        (tmp / "a").write_text("half")
        raise UserError("input.jsonl:3: not JSON")

    with pytest.raises(UserError):
        run_stage(out, stage="demo", config={"v": 2}, inputs=[], work=broken)
    assert (out / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_refuses_to_overwrite_foreign_directory(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="refusing to overwrite"):
        run_stage(foreign, stage="demo", config={}, inputs=[], work=lambda tmp: {})
    assert (foreign / "precious.txt").read_text() == "keep"


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    code = main(["tokenizer", "train", "--input", str(missing), "--lang", "fa", "--vocab-size", "100",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("langgraft: error:") and "nope.txt" in err[0]
    assert json.dumps(err)  # plain text, no traceback
    assert not (tmp_path / "o").exists()
