"""The training loss module reads the trained embedding and head rows itself (train/model.py `LossModule.embed`,
train/loss.py `merged_weight`) instead of through PEFT's layers, which rebuild the whole [vocab, dim] matrix at every
forward pass. What it computes must stay PEFT's: the same input embeddings to the bit, the same loss and gradients,
for tied and untied heads, a scaled embedding (Gemma 3), trained ids in one run or scattered, every stage, and
after the trained rows move (the merged head is kept across calls, so a stale copy would show there)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from langgraft.train.config import TrainConfig
from langgraft.train.model import LossModule, build_peft_model

VOCAB = 300
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128)


def _model(kind: str):
    torch.manual_seed(0)
    if kind == "llama-untied":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**COMMON, tie_word_embeddings=False))
    if kind == "llama-tied":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**COMMON, tie_word_embeddings=True))
    if kind == "gemma3-scaled":  # Gemma3TextScaledWordEmbedding multiplies by sqrt(hidden) in its forward
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**COMMON, head_dim=8, tie_word_embeddings=True,
                                                        final_logit_softcapping=None))
    raise ValueError(kind)


def _reference(peft_model, ids):
    """PEFT's own path: the model's embedding layer, its head, transformers' cross-entropy."""
    return peft_model(input_ids=ids, labels=ids, use_cache=False).loss


def _grads(peft_model):
    return {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("kind", ["llama-untied", "llama-tied", "gemma3-scaled"])
@pytest.mark.parametrize("stage", ["align", "pretrain"])
@pytest.mark.parametrize("rows", ["run", "scattered"])
def test_loss_module_computes_what_peft_computes(kind, stage, rows):
    token_ids = list(range(250, 290)) if rows == "run" else [7, 123, 250, 3, 299, 64]
    peft_model = build_peft_model(_model(kind), stage, TrainConfig(model="unused"), token_ids).eval()  # no dropout
    module = LossModule(peft_model, chunk=7)
    assert module.fused
    gen = torch.Generator().manual_seed(1)
    deltas = [p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n]
    assert deltas
    with torch.no_grad():  # trained rows unlike the base's, so reading the wrong ones shows
        for p in deltas:
            p.add_(torch.randn(p.shape, generator=gen))
    ids = torch.randint(0, VOCAB, (2, 24), generator=gen)
    ids[0, :len(token_ids[:12])] = torch.tensor(token_ids[:12])  # every kind of row in the batch
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    for step in range(2):  # the second pass reads the head kept from the first, after the rows moved
        peft_model.zero_grad()
        embeds = module.embed(ids)
        assert embeds is not None
        assert torch.equal(embeds, peft_model.get_input_embeddings()(ids)), (kind, step)
        ours = module(ids)
        ours.backward()
        got = _grads(peft_model)
        peft_model.zero_grad()
        ref = _reference(peft_model, ids)
        ref.backward()
        want = _grads(peft_model)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        assert got.keys() == want.keys() and got
        for name in want:  # float32 sums in another order err relative to the tensor's scale, not each element's
            atol = 1e-5 * max(1.0, float(want[name].abs().max()))
            torch.testing.assert_close(got[name], want[name], atol=atol, rtol=1e-4, msg=f"{kind} {step} {name}")
        opt.step()


def test_loss_module_keeps_one_merged_head_and_uses_the_models_embedding_when_rows_are_merged():
    """One cached head across micro-batches (not a new [vocab, dim] copy per call); with the trained rows merged
    into the base weight, or no rows trained, the model's own embedding runs."""
    peft_model = build_peft_model(_model("llama-tied"), "pretrain", TrainConfig(model="unused"), list(range(250, 290)))
    module = LossModule(peft_model, chunk=7)
    ids = torch.randint(0, VOCAB, (1, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module(ids).backward()
        first = next(iter(module._head_cache.values()))
        module(ids).backward()
    assert len(module._head_cache) == 1 and next(iter(module._head_cache.values())) is first
    assert first.dtype == torch.bfloat16
    emb = peft_model.get_input_embeddings()
    emb.token_adapter.merge()
    assert module.embed(ids) is None
    emb.token_adapter.unmerge()
    assert module.embed(ids) is not None
    plain = build_peft_model(_model("llama-tied"), "pretrain", TrainConfig(model="unused"), [])
    assert LossModule(plain, chunk=7).embed(ids) is None
