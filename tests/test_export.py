"""`langgraft export`: the merged checkpoint and the compact adapter reload to the trained model's logits."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from langgraft.cli import main
from langgraft.config import from_dict
from langgraft.export import export_run
from langgraft.train.config import TrainConfig
from langgraft.train.stages import train
from test_train_support import make_dataset, make_extended_model, persian_lines


@pytest.mark.parametrize("stage,kind,tok", [("pretrain", "llama", "mistral"), ("align", "gemma", "gpt2")])
def test_merged_and_adapter_reload_to_same_logits(tmp_path, data_dir, stage, kind, tok):
    model = make_extended_model(tmp_path, data_dir, kind=kind, tok_name=tok, n_new=20)
    fa = persian_lines(data_dir, 60)
    ds = make_dataset(tmp_path / "data", "fa", fa[:50], fa[50:])
    cfg = from_dict(TrainConfig, {"model": str(model), "data": {"dataset": str(ds), "block_size": 16},
                                  "micro_batch_size": 2, "max_steps": 4, "checkpoint_every": 0, "eval_every": 0,
                                  "precision": "fp32", "optim": {"lr": 1e-2, "embed_lr": 1e-2},
                                  "lora": {"targets": ["q_proj", "v_proj"]}})
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
