"""`langgraft export`: the merged checkpoint and the compact adapter reload to the trained model's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from langgraft.cli import main
from langgraft.export.run import export_run
from langgraft.train.adapter_card import write_adapter_card
from langgraft.train.stages import train
from helpers import make_extended_model, persian_lines, tiny_run, train_config


@pytest.mark.parametrize("stage,kind,tok", [("pretrain", "llama", "mistral"), ("align", "gemma", "gpt2")])
def test_merged_and_adapter_reload_to_same_logits(tmp_path, data_dir, stage, kind, tok):
    model = make_extended_model(tmp_path, data_dir, kind=kind, tok_name=tok, n_new=20)
    cfg = train_config(model, data_dir, tmp_path, 50, 10, max_steps=4, checkpoint_every=0, eval_every=0,
                       optim={"lr": 1e-2, "embed_lr": 1e-2})
    train(stage, cfg, out=tmp_path / "run")
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "model").eval()
    base = AutoModelForCausalLM.from_pretrained(model)
    base_emb = base.get_input_embeddings().weight.detach().clone()
    adapted = PeftModel.from_pretrained(base, tmp_path / "export" / "adapter").eval()
    ids = torch.randint(0, merged.config.vocab_size - 64, (2, 12))
    ids[:, ::3] = torch.arange(32768 if tok == "mistral" else 50257, merged.config.vocab_size)[:4].repeat(2, 1)[:, :4]
    with torch.no_grad():
        a, b = merged(ids).logits, adapted(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # rows=new: old rows bit-identical, new rows trained, the adapter a fraction of the full model
    emb = merged.get_input_embeddings().weight
    n_base = 32768 if tok == "mistral" else 50257
    assert torch.equal(emb[:n_base], base_emb[:n_base]) and not torch.equal(emb[n_base:], base_emb[n_base:])
    if kind == "gemma":
        assert merged.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    assert (tmp_path / "export" / "model" / "new_tokens.json").is_file()  # the next stage can train rows=new
    sizes = export_run(tmp_path / "run", out=tmp_path / "export")  # a rerun is a no-op returning the summary
    assert sizes["adapter_mb"] < sizes["model_mb"] / 4


def test_unfinished_run_is_rejected(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a finished `langgraft train` run" in capsys.readouterr().err


def test_adapter_loads_its_base_from_another_working_directory(tmp_path, data_dir, monkeypatch):
    """A relative model path given to train becomes an absolute base in the adapter (and its README), so
    `AutoPeftModelForCausalLM.from_pretrained(ADAPTER)` works from anywhere, offline, with the same logits."""
    work = tmp_path / "work"
    cfg = tiny_run(work, data_dir, 40, 8, max_steps=2, checkpoint_every=0, eval_every=0)
    monkeypatch.chdir(work)
    cfg.model = "extended"  # as a user types it on the command line
    train("align", cfg, out=Path("run"))
    adapter = work / "run" / "adapter"
    base = str((work / "extended").resolve())
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    readme = (adapter / "README.md").read_text(encoding="utf-8")
    assert f"Base model: `{base}`" in readme and f"`langgraft extend` of `{(work / 'base').resolve()}`" in readme
    ids = [[1, 5, 9, 32770]]
    script = ("import sys, torch; from peft import AutoPeftModelForCausalLM; "
              "m = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval(); "
              f"print(float(m(torch.tensor({ids})).logits.double().sum()))")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", script, "../work/run/adapter"], cwd=elsewhere, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    here = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    with torch.no_grad():
        want = float(here(torch.tensor(ids)).logits.double().sum())
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(want, rel=1e-6)


def test_adapter_card_names_the_hub_model_the_base_was_extended_from(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "extend_report.json").write_text(json.dumps({"source_model": "HuggingFaceTB/SmolLM2-135M"}))
    (tmp_path / "adapter").mkdir()
    write_adapter_card(tmp_path / "adapter", str(tmp_path / "base"), "pretrain")
    card = (tmp_path / "adapter" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M\nlibrary_name: peft\n---\n")
    assert f"Base model: `{tmp_path / 'base'}`" in card and "`langgraft extend` of `HuggingFaceTB/SmolLM2-135M`" in card


def test_adapter_card_of_a_base_taken_straight_from_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name: the base is a hub id (train rows=all on it)
    (tmp_path / "adapter").mkdir()
    write_adapter_card(tmp_path / "adapter", "HuggingFaceTB/SmolLM2-135M", "instruct")
    card = (tmp_path / "adapter" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M\n") and "langgraft extend" not in card


def test_every_checkpoint_is_a_peft_adapter_that_export_and_eval_take(tmp_path, data_dir, capsys):
    """Step N of a run, not only its end: each checkpoint holds adapter/ (PEFT), `export --checkpoint step-N`
    merges it, and eval takes the checkpoint folder itself."""
    cfg = tiny_run(tmp_path, data_dir, 50, 10, max_steps=4, checkpoint_every=2, keep_checkpoints=2, eval_every=0,
                   optim={"lr": 1e-2, "embed_lr": 1e-2})
    run = tmp_path / "run"
    train("pretrain", cfg, out=run)
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    logits = {}
    ids = torch.randint(0, 1000, (2, 12))
    for ckpt in checkpoints:
        assert (ckpt / "adapter" / "adapter_config.json").is_file() and (ckpt / "adapter" / "tokenizer.json").is_file()
        out = tmp_path / f"export-{ckpt.name}"
        assert main(["export", "--run", str(run), "--checkpoint", ckpt.name.replace("0000000", ""),
                     "--out", str(out)]) == 0
        assert json.loads((out / "manifest.json").read_text())["config"]["checkpoint"] == ckpt.name
        with torch.no_grad():
            logits[ckpt.name] = AutoModelForCausalLM.from_pretrained(out / "model").eval()(ids).logits
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "export")]) == 0
    with torch.no_grad():
        final = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "model").eval()(ids).logits
    torch.testing.assert_close(logits["step-00000004"], final)  # the last checkpoint is the finished run
    assert not torch.allclose(logits["step-00000002"], final)  # step 2 is its own model
    # a missing step names the ones there are
    assert main(["export", "--run", str(run), "--checkpoint", "step-3", "--out", str(tmp_path / "x")]) == 2
    assert "checkpoints: step-2, step-4" in capsys.readouterr().err
    # eval: the checkpoint folder, its adapter, and the export of it score the same
    texts = tmp_path / "heldout.jsonl"
    texts.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                             for t in persian_lines(data_dir, 70)[-4:]), encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text(f"name: ck_bpc\nlang: fa\nkind: intrinsic\ndata: {{path: {texts}, format: jsonl}}\n"
                    "text: text\nmetrics: [bpc]\n")
    models = [f"ck={checkpoints[0]}", f"ad={checkpoints[0] / 'adapter'}",
              f"ex={tmp_path / 'export-step-00000002'}"]
    assert main(["eval", "--model", *models, "--tasks", str(task), "--out", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    scores = {name: results[name]["ck_bpc"]["bpc"]["value"] for name in ("ck", "ad", "ex")}
    assert scores["ck"] == scores["ad"] and abs(scores["ck"] - scores["ex"]) < 1e-4, scores


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_weights_get_the_umask_like_every_other_file(tmp_path, umask):
    """safetensors writes through a 0600 temporary file; a stage's output folder gives every file the mode the
    umask gives a plain file (weights of a model, an adapter and a nested folder alike)."""
    from safetensors.torch import save_file

    from langgraft.rundir import run_stage
    from helpers import tiny_config

    def work(tmp: Path) -> dict:
        AutoModelForCausalLM.from_config(tiny_config("llama", 64, hidden=8, layers=1)).save_pretrained(tmp / "model")
        (tmp / "adapter").mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp / "adapter" / "adapter_model.safetensors"))
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        (tmp / "run.sh").chmod(0o755)
        return {}

    old = os.umask(umask)
    try:
        run_stage(tmp_path / "out", stage="export", config={}, inputs=[], work=work)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"model.safetensors", "adapter_model.safetensors", "config.json", "manifest.json"} <= \
        {p.name for p in files}
    for path in files:
        want = 0o777 if path.name == "run.sh" else 0o666
        assert path.stat().st_mode & 0o777 == want & ~umask, path
    for path in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, path
