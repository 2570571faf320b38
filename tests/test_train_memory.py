"""The peak-memory estimate of a training stage: printed before training and by `train --stage S --show-config`,
read from the model folder's own config.json, and moving the right way with each setting that changes memory."""

from __future__ import annotations

import dataclasses
import gc
import re

import pytest
import torch
from helpers import make_extended_model, tiny_run

from langgraft.cli import main
from langgraft.train.config import TrainConfig
from langgraft.train.memory import estimate_peak, read_shape
from langgraft.train.stages import train


@pytest.fixture(scope="module")
def extended(tmp_path_factory, data_dir):
    return make_extended_model(tmp_path_factory.mktemp("mem"), data_dir)


def _gib(text: str) -> float:
    return float(re.search(r"estimated peak host memory: ([\d.]+) GiB", text).group(1))


def test_show_config_after_stage_prints_the_estimate_for_that_config(extended, capsys):
    for micro in (4, 64):
        with pytest.raises(SystemExit) as stop:
            main(["train", "--stage", "pretrain", f"model={extended}", f"micro_batch_size={micro}", "--show-config"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert f"micro-batch {micro} x 512 tokens" in out, out
    with pytest.raises(SystemExit):
        main(["train", "--stage", "pretrain", "model=/nonexistent/model", "--show-config"])
    assert "no memory estimate (/nonexistent/model)" in capsys.readouterr().out


def test_estimate_moves_with_every_setting_that_changes_memory(extended):
    shape = read_shape(extended)
    base = dataclasses.replace(TrainConfig(model=str(extended)), micro_batch_size=4)

    def est(cfg, *, stage="pretrain", rows=40, bf16=True):
        return estimate_peak(shape, cfg, stage=stage, rows=rows, bf16=bf16)

    one = est(base)
    assert one["total"] == sum(v for k, v in one.items() if k != "total")
    double = est(dataclasses.replace(base, micro_batch_size=8))
    assert double["activations"] == 2 * one["activations"]
    ckpt = est(dataclasses.replace(base, gradient_checkpointing=True))
    assert ckpt["activations"] < one["activations"] and ckpt["total"] < one["total"]
    assert est(base, rows=shape.vocab)["trained + grads + AdamW"] > one["trained + grads + AdamW"]
    assert est(base, bf16=False)["activations"] > one["activations"]
    assert est(base, stage="align")["trained + grads + AdamW"] < one["trained + grads + AdamW"]  # no LoRA


def test_training_prints_the_estimate_before_the_first_step(tmp_path, data_dir, capsys):
    cfg = tiny_run(tmp_path, data_dir, 8, 2, max_steps=1, checkpoint_every=0, gradient_checkpointing=True)
    train("pretrain", cfg, out=tmp_path / "run")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert _gib(text) > 0 and "fp32, activation checkpointing on" in text, text
    assert text.index("estimated peak") < text.index("tokenizing")  # before the data, the model, the first step


def test_checkpoint_layers_recomputes_only_the_first_n_layers_and_keeps_the_loss(tmp_path, data_dir):
    """gradient_checkpointing with checkpoint_layers=N: the first N decoder layers recompute, the rest do not, and a
    step's loss and gradients equal the run without checkpointing (recomputation changes memory, not maths)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from langgraft.train.model import checkpoint_layers
    from langgraft.model.load import load_causal_lm

    model_dir = make_extended_model(tmp_path, data_dir)
    for first, want in ((0, [True, True]), (1, [True, False]), (5, [True, True])):
        model = load_causal_lm(str(model_dir), dtype=torch.float32)
        checkpoint_layers(model, first)
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        assert [layer.gradient_checkpointing for layer in layers] == want, first
    ids = torch.randint(0, 500, (2, 16))
    grads = []
    for first in (None, 1):
        torch.manual_seed(0)
        model = load_causal_lm(str(model_dir), dtype=torch.float32).train()
        if first is not None:
            checkpoint_layers(model, first)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append((float(loss), model.get_input_embeddings().weight.grad.clone()))
    assert abs(grads[0][0] - grads[1][0]) < 1e-6
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_the_estimate_counts_only_the_checkpointed_layers(extended):
    from langgraft.train.memory import Shape

    # SmolLM2-135M extended with Persian: deep enough that each recomputed layer saves more than the recompute holds
    shape = Shape(vocab=66688, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64, tied=True)
    cfg = dataclasses.replace(TrainConfig(model=str(extended)), gradient_checkpointing=True)
    every = estimate_peak(shape, cfg, stage="pretrain", rows=40, bf16=True)["activations"]
    one = estimate_peak(shape, dataclasses.replace(cfg, checkpoint_layers=1), stage="pretrain", rows=40,
                        bf16=True)["activations"]
    off = estimate_peak(shape, dataclasses.replace(cfg, gradient_checkpointing=False), stage="pretrain", rows=40,
                        bf16=True)["activations"]
    ten = estimate_peak(shape, dataclasses.replace(cfg, checkpoint_layers=10), stage="pretrain", rows=40,
                        bf16=True)["activations"]
    assert every < ten < one < off


def _saved_bytes(fn) -> dict[torch.dtype, int]:
    """Bytes autograd saves for the backward pass while `fn()` runs, by dtype."""
    saved: dict[torch.dtype, int] = {}

    def pack(t):
        saved[t.dtype] = saved.get(t.dtype, 0) + t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


def test_lora_dropout_keeps_a_bool_mask_and_drops_like_nn_dropout(extended):
    """The LoRA input dropout saves a one-byte mask, not a float one the input's width; it zeroes about p of the
    inputs, scales the rest by 1/(1-p), and is the identity in eval mode."""
    from langgraft.model.load import load_causal_lm
    from langgraft.train.model import LoraDropout, build_peft_model

    cfg = dataclasses.replace(TrainConfig(model=str(extended)))
    peft_model = build_peft_model(load_causal_lm(str(extended)), "pretrain", cfg, [])
    drops = [m for m in peft_model.modules() if isinstance(m, LoraDropout)]
    assert drops and not [m for m in peft_model.modules() if isinstance(m, torch.nn.Dropout)]
    drop = drops[0]
    x = torch.ones(4096, 64, requires_grad=True)
    for autocast, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            saved = _saved_bytes(lambda: drop.train()(x).sum().backward())
            y = drop(x)
        assert y.dtype == dtype and saved.get(torch.bool) == x.numel() and set(saved) == {torch.bool}, saved
        kept = y[y != 0].float()
        assert abs(1 - kept.numel() / x.numel() - drop.p) < 0.01
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - drop.p)), atol=1e-2, rtol=0)
    assert drop.eval()(x) is x


def test_frozen_linears_in_bf16_under_cpu_autocast_keep_the_loss_and_gradients(extended):
    """Under bf16 autocast over float32 weights, the frozen linear layers are stored in bf16 once: what autocast
    computed with its own bf16 copy, to the bit, without the float32 weights and the copies autograd kept."""
    from langgraft.model.load import load_causal_lm
    from langgraft.train.model import build_peft_model, narrow_frozen_linears

    cfg = TrainConfig(model=str(extended))
    ids = torch.randint(0, 500, (2, 16))
    results = []
    for narrow in (False, True):
        torch.manual_seed(0)
        peft_model = build_peft_model(load_causal_lm(str(extended)), "pretrain", cfg, [3, 4]).eval()
        if narrow:
            mapped = _mapped_files()
            narrow_frozen_linears(peft_model)
            gc.collect()
            # the float32 weights left are copies: the model file's mapping is closed
            assert any(f.startswith(str(extended)) for f in mapped), mapped
            assert not any(f.startswith(str(extended)) for f in _mapped_files())
        dtypes = {p.dtype for p in peft_model.parameters() if p.requires_grad}
        rows = {id(p): p.dtype for m in (peft_model.get_input_embeddings(), peft_model.get_output_embeddings())
                for p in m.parameters()}  # embedding and head (here untied): float32, trained rows and all
        frozen = {m.weight.dtype for m in peft_model.modules() if type(m) is torch.nn.Linear
                  and not m.weight.requires_grad and id(m.weight) not in rows}
        assert dtypes == {torch.float32} and frozen == ({torch.bfloat16} if narrow else {torch.float32})
        assert set(rows.values()) == {torch.float32} and len(rows) >= 3
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)



def _mapped_files() -> set[str]:
    with open("/proc/self/maps", encoding="utf-8") as f:
        return {line.split(maxsplit=5)[5].strip() for line in f if len(line.split(maxsplit=5)) == 6}


SMOLLM2 = {"model_type": "llama", "vocab_size": 66688, "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True}


@pytest.mark.parametrize("bf16", [True, False])
def test_memory_limit_checkpoints_the_fewest_first_layers_that_fit(tmp_path, bf16):
    """memory_limit_gib: unchanged when the estimate fits; else checkpointing on the fewest first layers whose
    estimate is under the limit (one layer fewer would not be); one error line when even every layer is not
    enough."""
    import json

    from langgraft.errors import UserError
    from langgraft.train.memory import fit_memory_limit

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    cfg = dataclasses.replace(TrainConfig(model=str(tmp_path)), rows="none", micro_batch_size=4)
    shape = read_shape(tmp_path)

    def est(c) -> int:
        return estimate_peak(shape, c, stage="pretrain", rows=0, bf16=bf16)["total"]

    def fit(limit_bytes: float):
        return fit_memory_limit("pretrain", dataclasses.replace(cfg, memory_limit_gib=limit_bytes / 2**30),
                                bf16=bf16, gpu=False)

    off, every = est(cfg), est(dataclasses.replace(cfg, gradient_checkpointing=True))
    assert fit_memory_limit("pretrain", cfg, bf16=bf16, gpu=False) is cfg  # no limit
    roomy = dataclasses.replace(cfg, memory_limit_gib=(off + 1) / 2**30)
    assert fit_memory_limit("pretrain", roomy, bf16=bf16, gpu=False) is roomy
    chosen = []
    for share in (0.05, 0.3, 0.6, 0.95):
        limit = every + share * (off - every)
        fitted = fit(limit)
        n = fitted.checkpoint_layers or shape.layers
        assert fitted.gradient_checkpointing and est(fitted) <= limit < est(dataclasses.replace(fitted,
                                                                                              checkpoint_layers=n - 1))
        chosen.append(n)
    assert chosen == sorted(chosen, reverse=True) and len(set(chosen)) == 4  # a tighter limit, more layers
    with pytest.raises(UserError, match=r"memory_limit_gib=.*even with activation checkpointing on every layer"):
        fit(every * 0.9)


def test_training_under_a_memory_limit_recomputes_and_keeps_the_loss(tmp_path, data_dir, capsys):
    """A limit the configuration does not fit turns checkpointing on before the first step (the printed estimate
    says so), and the run trains to the same loss as without the limit."""
    import json

    from langgraft.formats.new_tokens import read_new_tokens
    from langgraft.train.memory import estimate_peak as peak

    losses = []
    for name, limit in (("free", None), ("limited", "half-way")):
        cfg = tiny_run(tmp_path / name, data_dir, 8, 2, max_steps=2, checkpoint_every=0, log_every=1)
        if limit:
            shape, est = read_shape(cfg.model), {}
            rows = len(read_new_tokens(cfg.model, flag="model")["tokens"])
            for ckpt in (False, True):
                est[ckpt] = peak(shape, dataclasses.replace(cfg, gradient_checkpointing=ckpt), stage="pretrain",
                                 rows=rows, bf16=False)["total"]
            cfg = dataclasses.replace(cfg, memory_limit_gib=(est[False] + est[True]) / 2 / 2**30)
        train("pretrain", cfg, out=tmp_path / name / "run")
        text = "".join(capsys.readouterr())
        metrics = [json.loads(x) for x in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        losses.append([m["loss"] for m in metrics if "loss" in m])
        if limit:
            assert "activation checkpointing on for 1 of 2 layers (to stay under memory_limit_gib=" in text, text
        else:
            assert "activation checkpointing off" in text
    assert losses[0] == losses[1] and len(losses[0]) == 2
