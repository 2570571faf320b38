"""The training engine: fused loss equals the model's loss, align/pretrain train the right rows, metrics, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from langgraft.config import from_dict
from langgraft.errors import UserError
from langgraft.train.config import TrainConfig
from langgraft.train.data import pack
from langgraft.train.stages import train
from helpers import english_lines, make_dataset, make_extended_model, persian_lines


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("train")
    model = make_extended_model(tmp, data_dir)
    fa = persian_lines(data_dir, 240)
    ds = make_dataset(tmp / "data", "fa_mono", fa[:200], fa[200:])
    return {"model": model, "dataset": ds, "tmp": tmp}


def config(setup, **over) -> TrainConfig:
    raw = {"model": str(setup["model"]), "data": {"dataset": str(setup["dataset"]), "block_size": 32},
           "micro_batch_size": 2, "max_steps": 6, "checkpoint_every": 3, "eval_every": 3, "eval_batches": 2,
           "log_every": 1, "precision": "fp32", "lora": {"targets": ["q_proj", "v_proj"]}, "loss_chunk": 16}
    for key, value in over.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return from_dict(TrainConfig, raw)


@pytest.mark.parametrize("stage", ["align", "pretrain"])
def test_fused_loss_and_grads_match_model_loss(setup, data_dir, stage):
    from transformers import AutoTokenizer

    from langgraft.train.model import LossModule, build_peft_model

    cfg = config(setup)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(setup["model"])
    peft_model = build_peft_model(model, stage, cfg, list(range(32768, 32808)))
    tok = AutoTokenizer.from_pretrained(setup["model"])
    ids = pack(persian_lines(data_dir, 20), tok, 24).blocks[:3]
    peft_model.eval()  # no LoRA dropout: both paths see the same function
    loss_module = LossModule(peft_model, chunk=7)
    ref = peft_model(input_ids=ids, labels=ids).loss
    ref.backward()
    want = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    peft_model.zero_grad()
    ours = loss_module(ids)
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-7, msg=name)
    nats, count = loss_module.loss_sum(ids)
    assert count == ids[:, 1:].numel() and nats / count == pytest.approx(ref.item(), rel=1e-5)


def _delta_keys(adapter_dir):
    return load_file(adapter_dir / "adapter_model.safetensors")


def test_align_trains_only_new_rows(setup):
    out = setup["tmp"] / "align-run"
    summary = train("align", config(setup), out=out)
    assert summary["steps"] == 6 and summary["trained_rows"] == 40
    assert 0.5 < summary["packing_efficiency"] <= 1.0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]
    evals = [r for r in lines if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(r["val_bpc"] > 0 for r in evals)
    assert all(r["lr"][0] > 0 for r in lines if "lr" in r)
    weights = _delta_keys(out / "adapter")
    assert all("trainable_tokens_delta" in k for k in weights) and not any("lora" in k for k in weights)
    base = AutoModelForCausalLM.from_pretrained(setup["model"])
    emb = base.get_input_embeddings().weight
    delta = next(v for k, v in weights.items() if "embed_tokens" in k)
    assert delta.shape == (40, emb.shape[1]) and not torch.equal(delta, emb[32768:32808])
    assert json.loads((out / "manifest.json").read_text())["summary"]["steps"] == 6
    # rerunning a finished run with the same config is a no-op
    assert train("align", config(setup), out=out).summary == json.loads((out / "manifest.json").read_text())["summary"]


def test_pretrain_trains_lora_and_rows_with_replay(setup, data_dir):
    out = setup["tmp"] / "pretrain-run"
    english = make_dataset(setup["tmp"] / "data", "en", english_lines(data_dir, 100), [], lang="en")
    summary = train("pretrain", config(setup, **{"optim.embed_lr": 1e-3, "data.replay": str(english),
                                                 "data.replay_fraction": 0.25}), out=out)
    assert summary["replay_blocks"] == round(summary["train_blocks"] / 3)  # 25% of all blocks
    weights = _delta_keys(out / "adapter")
    assert any("lora_A" in k for k in weights) and any("trainable_tokens_delta" in k for k in weights)
    assert summary["val_loss"] > 0 and len(list((out / "checkpoints").iterdir())) == 2  # keep_checkpoints=2


def test_bad_input_is_one_line(setup):
    with pytest.raises(UserError, match="lora.targets: no linear module named 'qkv'"):
        train("pretrain", config(setup, **{"lora.targets": ["qkv"]}), out=setup["tmp"] / "bad1")
    with pytest.raises(UserError, match="data.dataset .*no dataset.json"):
        train("align", config(setup, **{"data.dataset": str(setup["tmp"])}), out=setup["tmp"] / "bad2")
    out = setup["tmp"] / "bad3"
    train("align", config(setup, max_steps=3), out=out)
    with pytest.raises(UserError, match=r"holds a finished run with another config \(max_steps: 3 → 4\)"):
        train("align", config(setup, max_steps=4), out=out)
    (out / "manifest.json").unlink()  # now it looks like a killed run
    with pytest.raises(UserError, match="holds an unfinished run; pass --resume"):
        train("align", config(setup, max_steps=4), out=out)
    with pytest.raises(UserError, match=r"config differs .*max_steps: 3 → 4"):
        train("align", config(setup, max_steps=4), out=out, resume=True)


def test_nan_loss_stops_without_saving(setup):
    out = setup["tmp"] / "nan-run"
    with pytest.raises(UserError, match=r"loss is not finite at step \d+; stopped without saving"):
        train("align", config(setup, **{"optim.lr": 1e30, "optim.max_grad_norm": 0.0, "optim.warmup_ratio": 0.0}),
              out=out)
    assert not (out / "manifest.json").exists()


def test_fused_loss_under_bf16_autocast_is_close(setup, data_dir):
    from transformers import AutoTokenizer

    from langgraft.train.model import LossModule, build_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(setup["model"])
    peft_model = build_peft_model(model, "pretrain", config(setup), list(range(32768, 32808))).eval()
    ids = pack(persian_lines(data_dir, 20), AutoTokenizer.from_pretrained(setup["model"]), 24).blocks[:3]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = peft_model(input_ids=ids, labels=ids).loss
        ours = LossModule(peft_model, chunk=16)(ids)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref.float(), rtol=1e-2, atol=1e-2)


def test_gradient_checkpointing_gives_the_same_step(setup):
    out_a, out_b = setup["tmp"] / "ckpt-off", setup["tmp"] / "ckpt-on"
    a = train("pretrain", config(setup, max_steps=2, eval_every=0, checkpoint_every=0), out=out_a)
    b = train("pretrain", config(setup, max_steps=2, eval_every=0, checkpoint_every=0, gradient_checkpointing=True),
              out=out_b)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-5)
    wa, wb = _delta_keys(out_a / "adapter"), _delta_keys(out_b / "adapter")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-6)


def test_one_process_trains_stages_at_different_precisions(setup):
    """`langgraft run` trains align, pretrain and instruct in one process; each may set its own precision."""
    runs = [("fp32", "align"), ("bf16", "pretrain"), ("fp32", "pretrain")]
    for i, (precision, stage) in enumerate(runs):
        summary = train(stage, config(setup, max_steps=1, eval_every=0, checkpoint_every=0, precision=precision),
                        out=setup["tmp"] / f"precision-{i}")
        assert summary["steps"] == 1 and torch.isfinite(torch.tensor(summary["final_loss"]))


def test_cli_train_with_overrides_and_errors(setup, capsys):
    import yaml

    from langgraft.cli import main
    from langgraft.config import to_dict

    cfg_file = setup["tmp"] / "cli.yaml"
    cfg_file.write_text(yaml.safe_dump(to_dict(config(setup))))
    out = setup["tmp"] / "cli-run"
    assert main(["train", "--stage", "align", "--config", str(cfg_file), "max_steps=2", "optim.embed_lr=1e-3",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_steps"] == 2 and manifest["config"]["optim"]["embed_lr"] == 1e-3
    assert "2 steps" in capsys.readouterr().out
    assert "(exit 0" in (out / "langgraft.log").read_text(encoding="utf-8")  # the run folder keeps its console
    assert main(["train", "--stage", "align", "--config", str(cfg_file), "optim.lrr=1", "--out",
                 str(setup["tmp"] / "cli-bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key optim.lrr" in err[0]
    assert not (setup["tmp"] / "cli-bad").exists()


def test_fused_loss_matches_on_a_tied_model(tmp_path, data_dir):
    """Gemma-style tied head: the trained rows get gradient from the embedding and the head, both paths."""
    from transformers import AutoTokenizer

    from langgraft.train.model import LossModule, build_peft_model

    model_dir = make_extended_model(tmp_path, data_dir, kind="gemma", tok_name="gpt2", n_new=20)
    torch.manual_seed(0)
    peft_model = build_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), "pretrain",
                                  config({"model": model_dir, "dataset": model_dir, "tmp": tmp_path}),
                                  list(range(50257, 50277))).eval()
    ids = pack(persian_lines(data_dir, 20), AutoTokenizer.from_pretrained(model_dir), 24).blocks[:2]
    ref = peft_model(input_ids=ids, labels=ids).loss
    ref.backward()
    want = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    peft_model.zero_grad()
    ours = LossModule(peft_model, chunk=11)(ids)
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-7, msg=name)


def test_rows_all_trains_every_real_row(setup):
    out = setup["tmp"] / "rows-all"
    summary = train("align", config(setup, rows="all", max_steps=2, eval_every=0, checkpoint_every=0,
                                    **{"optim.embed_lr": 1e-2}), out=out)
    delta = next(v for k, v in _delta_keys(out / "adapter").items() if "embed_tokens" in k)
    emb = AutoModelForCausalLM.from_pretrained(setup["model"]).get_input_embeddings().weight
    assert summary["trained_rows"] == 32808 == delta.shape[0]  # every tokenizer id, not the padding rows
    assert not torch.equal(delta[:32768], emb[:32768])  # old rows moved too


@pytest.mark.parametrize("ids", [[5, 6, 7, 8], [9, 2, 30, 17]], ids=["one-run", "scattered"])
def test_fused_head_ce_matches_autograd_for_any_trained_ids(ids):
    """Contiguous ids take the slice path, scattered ones the gather path; ignored labels (-100) count nowhere."""
    from langgraft.train.loss import fused_head_ce

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(40, 8, generator=gen)
    idx = torch.tensor(ids)
    h = torch.randn(3, 11, 8, generator=gen, requires_grad=True)
    delta = torch.randn(len(ids), 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 40, (3, 11), generator=gen)
    labels[0, :4] = -100
    loss = fused_head_ce(h, delta, weight, idx, labels, chunk=5)
    loss.backward()
    h2, d2 = h.detach().clone().requires_grad_(True), delta.detach().clone().requires_grad_(True)
    w_eff = weight.index_copy(0, idx, d2)
    ref = torch.nn.functional.cross_entropy((h2 @ w_eff.t()).reshape(-1, 40), labels.reshape(-1), ignore_index=-100)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(h.grad, h2.grad, atol=1e-5) and torch.allclose(delta.grad, d2.grad, atol=1e-5)


def test_console_says_what_it_tokenizes_and_shows_validation_loss(setup, capsys):
    """Before step 1 the console names the documents being tokenized (a long silence otherwise); every validation
    run's loss is printed, not only written to metrics.jsonl."""
    out = setup["tmp"] / "console"
    train("align", config(setup, max_steps=4, eval_every=2, checkpoint_every=0), out=out)
    err = capsys.readouterr().err
    assert "tokenizing 200 documents of fa_mono (train) into blocks of 32 tokens" in err
    assert "tokenizing 40 documents of fa_mono (validation)" in err
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert f"step {r['step']}/4: train loss {r['loss']:.4f}, validation loss {r['val_loss']:.4f}" in err
