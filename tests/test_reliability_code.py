"""Fault suite, no code from a model folder (docs/RELIABILITY.md, promise 2): a model, tokenizer or adapter folder
that declares its own Python (`auto_map`, `.py` files) is refused by every verb with one line, and a `y` piped to
stdin never reaches a "run the custom code? [y/N]" prompt. Decided in `langgraft.safeload`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import load_base_tokenizer, make_dataset, make_extended_tokenizer, persian_lines, save_tiny_model

from langgraft.cli import main

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _plant(folder: Path, variant: str, marker: Path) -> None:
    """Make `folder` (a model, tokenizer or adapter folder) ask for its own code; that code writes `marker`."""
    code = (f"open({str(marker)!r}, 'w').write('ran')\n"
            "from transformers import PreTrainedTokenizerFast, PretrainedConfig\n"
            "class EvilTok(PreTrainedTokenizerFast):\n    pass\n"
            "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    if variant != "hub_auto_map":
        (folder / "evil.py").write_text(code)
    tc = folder / "tokenizer_config.json"
    if variant in ("tokenizer_auto_map", "hub_auto_map", "adapter_auto_map"):
        cfg = json.loads(tc.read_text())
        cfg.pop("tokenizer_class", None)  # with no class of its own, only the folder's code can build it
        ref = "attacker/tools--evil.EvilTok" if variant == "hub_auto_map" else "evil.EvilTok"
        cfg["auto_map"] = {"AutoTokenizer": [None, ref]}
        tc.write_text(json.dumps(cfg))
    if variant == "config_auto_map":
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig"})
        (folder / "config.json").write_text(json.dumps(cfg))
        tok = json.loads(tc.read_text())
        tok.pop("tokenizer_class", None)
        tc.write_text(json.dumps(tok))


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir):
    """A tiny model with a real (Mistral) tokenizer, an extended tokenizer, a dataset and a finished 2-step run."""
    from helpers import make_extended_model

    from langgraft.config import from_dict
    from langgraft.tokenizer.train import train_tokenizer
    from langgraft.train.config import TrainConfig
    from langgraft.train.stages import train

    tmp = tmp_path_factory.mktemp("code")
    model = save_tiny_model("llama", load_base_tokenizer(data_dir, "mistral", tmp / "bt"), tmp / "model",
                            hidden=8, layers=1)
    tok = make_extended_tokenizer(data_dir, "mistral", tmp / "ext-tok", n_new=5)
    extended = make_extended_model(tmp / "x", data_dir, n_new=5)
    fa = persian_lines(data_dir, 60)
    dataset = make_dataset(tmp / "data", "fa", fa[:50], fa[50:])
    raw = {"model": str(extended), "data": {"dataset": str(dataset), "block_size": 16}, "micro_batch_size": 2,
           "max_steps": 2, "eval_every": 0, "precision": "fp32", "lora": {"targets": ["q_proj", "v_proj"]}}
    train("pretrain", from_dict(TrainConfig, raw), out=tmp / "run")
    (tmp / "prompts.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    (tmp / "held.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in fa[:3]))
    task = {"name": "bpc_fa", "lang": "fa", "kind": "intrinsic", "metrics": ["bpc"], "text": "text",
            "data": {"path": "held.jsonl"}}
    (tmp / "task.yaml").write_text(yaml.safe_dump(task))
    (tmp / "fa.txt").write_text("\n".join(persian_lines(data_dir, 300)), encoding="utf-8")
    sp = train_tokenizer([tmp / "fa.txt"], lang="fa", vocab_size=400, out=tmp / "sp", threads=1).path / "sp.model"
    return {"sp": sp, "model": model, "tok": tok, "extended": extended, "dataset": dataset, "run": tmp / "run",
            "tmp": tmp}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _command(verb: str, base: dict, tmp: Path, variant: str) -> tuple[list[str], Path]:
    """(argv, the folder to plant code in) for `verb`, with its planted folder a copy in `tmp`."""
    b, out = base, str(tmp / "out")
    if variant == "adapter_auto_map":  # the adapter folder of a run: chat/generate take it as --model, export as --run
        run = _copy(b["run"], tmp / "run")
        argv = {"chat": ["chat", "--model", str(run / "adapter"), "--prompt", "hi", "--max-new-tokens", "2"],
                "generate": ["generate", "--model", str(run / "adapter"), "--input", str(b["tmp"] / "prompts.jsonl"),
                             "--out", str(tmp / "gen.jsonl"), "--max-new-tokens", "2"],
                "export": ["export", "--run", str(run), "--out", out]}[verb]
        return argv, run / "adapter"
    if verb == "train":
        model = _copy(b["extended"], tmp / "m")
        return ["train", "--stage", "pretrain", f"model={model}", f"data.dataset={b['dataset']}", "data.block_size=16",
                "micro_batch_size=2", "max_steps=1", "precision=fp32", "--out", out], model
    if verb == "extend-tokenizer":
        tok = _copy(b["tok"], tmp / "t")
        return ["extend", "--model", str(b["model"]), "--tokenizer", str(tok), "--out", out], tok
    model = _copy(b["model"], tmp / "m")
    argv = {
        "chat": ["chat", "--model", str(model), "--prompt", "hi", "--max-new-tokens", "2"],
        "generate": ["generate", "--model", str(model), "--input", str(b["tmp"] / "prompts.jsonl"),
                     "--out", str(tmp / "gen.jsonl"), "--max-new-tokens", "2"],
        "eval": ["eval", "--model", f"m={model}", "--tasks", str(b["tmp"] / "task.yaml"),
                 "--data-root", str(b["tmp"]), "--out", out],
        "extend": ["extend", "--model", str(model), "--tokenizer", str(b["tok"]), "--out", out],
        "tokenizer-extend": ["tokenizer", "extend", "--base", str(model), "--add", str(b["sp"]), "--lang", "fa",
                             "--out", out],
        "tokenizer-report": ["tokenizer", "report", "--tokenizer", f"m={model}", "--text", f"fa={b['tmp'] / 'fa.txt'}",
                             "--out", out],
    }[verb]
    return argv, model


CASES = ([(verb, v) for verb in ("chat", "generate", "eval", "extend", "train", "tokenizer-extend", "tokenizer-report")
          for v in ("tokenizer_auto_map", "config_auto_map", "hub_auto_map")]
         + [("extend-tokenizer", "tokenizer_auto_map")]
         + [(verb, "adapter_auto_map") for verb in ("chat", "generate", "export")])


@pytest.mark.parametrize("verb,variant", CASES)
def test_no_verb_runs_code_from_a_model_folder_even_with_y_on_stdin(base, tmp_path, monkeypatch, capsys, verb,
                                                                    variant):
    argv, folder = _command(verb, base, tmp_path, variant)
    marker = tmp_path / "pwned"
    _plant(folder, variant, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))  # answers yes to any prompt
    status = main(argv)
    printed = capsys.readouterr()
    assert not marker.exists(), "the folder's code ran"
    assert status != 0 and "[y/N]" not in printed.out + printed.err
    errors = [line for line in printed.err.splitlines() if line.startswith("langgraft: error:")]
    assert len(errors) == 1 and str(folder) in errors[0], printed.err
    assert "never runs code from a model folder" in errors[0]
    if verb != "eval":  # eval reports a model it cannot load in results.json and goes on with the others
        assert not (tmp_path / "out").exists() and not (tmp_path / "gen.jsonl").exists()


def test_echo_y_into_chat_runs_nothing(base, tmp_path):
    """The reported command itself: `echo y | langgraft chat --model DIR --prompt hi`."""
    model = _copy(base["model"], tmp_path / "m")
    marker = tmp_path / "pwned"
    _plant(model, "tokenizer_auto_map", marker)
    proc = subprocess.run([sys.executable, "-m", "langgraft", "chat", "--model", str(model), "--prompt", "hi"],
                          input="y\n", capture_output=True, text=True, env=ENV, timeout=300)
    assert not marker.exists() and proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"langgraft: error: --model {model}")
    assert "Traceback" not in proc.stderr and "[y/N]" not in proc.stdout


def test_a_python_file_alone_or_auto_map_in_any_loader_file_is_refused(tmp_path, base):
    """The check itself, on the files transformers reads: a `.py` file, and `auto_map` in each JSON it reads."""
    from langgraft.errors import UserError
    from langgraft.safeload import CODE_KEYS, check_no_code

    folder = _copy(base["model"], tmp_path / "m")
    check_no_code(folder)  # a plain model folder passes
    (folder / "modeling_x.py").write_text("")
    with pytest.raises(UserError, match=r"holds Python code \(modeling_x.py\)"):
        check_no_code(folder)
    (folder / "modeling_x.py").unlink()
    for name, keys in CODE_KEYS.items():
        path = folder / name
        before = path.read_bytes() if path.exists() else None
        data = json.loads(before) if before else {}
        path.write_text(json.dumps({**data, keys[0]: {"AutoModel": "x--y.Z"}}))
        with pytest.raises(UserError, match=f"{path}: `{keys[0]}` asks for the folder's own code"):
            check_no_code(folder)
        path.write_bytes(before) if before is not None else path.unlink()


@pytest.fixture(scope="module")
def a_gguf(tmp_path_factory, data_dir):
    from test_import_gguf import write_tiny_gguf
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path, AutoTokenizer.from_pretrained(data_dir / "tokenizers/gpt2"), tied=False)
    return path


@pytest.mark.parametrize("declared", ["tokenizer_config.json", "config.json"])
def test_import_gguf_runs_no_code_from_the_folder_the_file_sits_in(a_gguf, tmp_path, monkeypatch, capsys, declared):
    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copy(a_gguf, folder / "tiny.gguf")
    marker = tmp_path / "pwned"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PreTrainedTokenizerFast, PretrainedConfig\n"
                                    "class EvilTok(PreTrainedTokenizerFast):\n    pass\n"
                                    "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    spec = ({"auto_map": {"AutoTokenizer": [None, "evil.EvilTok"]}} if declared == "tokenizer_config.json"
            else {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}})
    (folder / declared).write_text(json.dumps(spec))
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))
    assert main(["import-gguf", str(folder / "tiny.gguf"), "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr()
    assert not marker.exists() and "[y/N]" not in printed.out
    assert f"--gguf {folder / declared}: `auto_map`" in printed.err and not (tmp_path / "out").exists()
