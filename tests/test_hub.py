"""Model names: a mistyped local path fails in seconds with one line (local side + hub side), offline mode is
respected, local folders resolve to absolute paths — the same resolution for every verb that loads a model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from langgraft.cli import main
from langgraft.errors import UserError
from langgraft.hub import resolve_model
from helpers import asset_lines, make_dataset

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once, like a hub out of reach


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)


@pytest.mark.parametrize("name,hub_side", [
    ("runs/nope", "the hub is unreachable"),  # a valid hub id too: the hub is asked, once
    ("gpt2-nope", "the hub is unreachable"),
    ("./runs/nope", "not a hub id either"),  # path-shaped: the hub is not asked at all
    ("runs/a/b", "not a hub id either"),
])
def test_mistyped_path_is_one_fast_line_with_both_sides(no_hub, tmp_path, monkeypatch, name, hub_side):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        resolve_model(name)
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert "\n" not in msg and f"--model {name}: no such local directory ({tmp_path}" in msg and hub_side in msg


def test_offline_mode_consults_only_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://192.0.2.1:9")  # would hang if it were contacted
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(UserError, match=r"no such local directory .*offline mode is on .* not in the local HF cache"):
        resolve_model("runs/nope")
    assert time.monotonic() - started < 5


def test_local_folder_resolves_absolute_and_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "runs" / "model").mkdir(parents=True)
    (tmp_path / "weights.bin").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("runs/model") == resolve_model("./runs/../runs/model") == str(tmp_path / "runs/model")
    with pytest.raises(UserError, match="weights.bin: not a directory"):
        resolve_model("weights.bin")


def _verb_fails_fast(argv: list[str], capsys, code: int = 2) -> str:
    started = time.monotonic()
    assert main(argv) == code
    assert time.monotonic() - started < 10  # a hub retry loop takes tens of seconds
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "runs/nope: no such local directory" in err[0] and "hub is unreachable" in err[0]
    return err[0]


def test_every_model_verb_fails_fast_on_a_mistyped_path(no_hub, tmp_path, monkeypatch, capsys):
    from langgraft.demo import demo_file

    fa = asset_lines("fa")
    dataset = make_dataset(tmp_path / "data", "fa", fa[:30], fa[30:])
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "new_tokens.json").write_text('{"base_vocab_size": 1, "vocab_size": 2, "tokens": []}')
    monkeypatch.chdir(tmp_path)
    _verb_fails_fast(["extend", "--model", "runs/nope", "--tokenizer", str(tok), "--out", "ext"], capsys)
    _verb_fails_fast(["train", "--stage", "align", "model=runs/nope", f"data.dataset={dataset}", "--out", "run"],
                     capsys)
    _verb_fails_fast(["chat", "--model", "runs/nope", "--prompt", "سلام"], capsys)
    task = demo_file("task_bpc_fa.yaml")  # the demo's own task and text: no ../shared/data needed
    _verb_fails_fast(["eval", "--model", "m=runs/nope", "--tasks", str(task), "--limit", "2", "--data-root",
                      str(task.parent), "--out", "ev"], capsys, code=1)
    assert not (tmp_path / "ext").exists() and not (tmp_path / "run").exists()


def test_offline_env_var_is_respected_end_to_end(tmp_path):
    """HF_HUB_OFFLINE=1 from the environment, as a user sets it: no network, one line, exit 2."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://192.0.2.1:9",
           "HF_HUB_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "langgraft", "chat", "--model", "runs/nope", "--prompt", "hi"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60  # the interpreter and torch import, not a retry loop
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no such local directory" in proc.stderr and "offline mode is on" in proc.stderr
    assert Path(tmp_path).exists() and not list(tmp_path.glob("runs*"))


@pytest.mark.parametrize("model,hub_side", [("runs/nope", "the hub is unreachable"),
                                            ("./runs/nope", "not a hub id either")])
def test_recipe_model_is_checked_by_the_same_resolution(no_hub, tmp_path, monkeypatch, capsys, model, hub_side):
    """`langgraft run`: the recipe's model_extend.model fails before any stage runs, naming the recipe key."""
    import shutil

    from langgraft.demo import CORPUS, demo_file

    for name in CORPUS:
        (tmp_path / "corpus").mkdir(exist_ok=True)
        shutil.copyfile(demo_file(name), tmp_path / "corpus" / name)
    shutil.copyfile(demo_file("recipe.yaml"), tmp_path / "recipe.yaml")
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    assert main(["run", "recipe.yaml", f"model_extend.model={model}", "tokenizer_extend.base=corpus",
                 "--from", "model_extend", "--to", "model_extend"]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"recipe.yaml: model_extend.model {model}: no such local directory" in err
    assert hub_side in err and not (tmp_path / "model_extend").exists()
