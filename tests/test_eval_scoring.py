"""Model-side scoring on tiny random models with real tokenizers: batched + prompt-cache reuse equals one pass
per request, generation stops at stop strings, rolling NLL predicts every token once."""

from __future__ import annotations

import pytest
import torch
from helpers import load_base_tokenizer, save_tiny_model

from langgraft.eval.scoring import encode_pair, generate_outputs, loglikelihoods, score_one, text_nll


@pytest.fixture(scope="module", params=["llama2", "qwen2"])
def tiny(request, data_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp(f"tiny-{request.param}")
    tok = load_base_tokenizer(data_dir, request.param, tmp / "tok")
    path = save_tiny_model("llama", tok, tmp / "model", hidden=32, layers=2)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _requests(data_dir):
    mc = (data_dir / "parsinlu/data/multiple-choice/test_lit.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    sst = (data_dir / "sst2/data/stsa.binary.dev").read_text(encoding="utf-8").splitlines()[:3]
    import json

    reqs = []
    for line in mc:  # four choices sharing one Persian prompt
        row = json.loads(line)
        reqs += [(f"پرسش: {row['question']}\nپاسخ:", " " + c) for c in row["candidates"]]
    for line in sst:
        reqs += [(f"Review: {line[2:]}\nSentiment:", c) for c in (" negative", " positive")]
    reqs.append(("a prompt alone", " with a much longer continuation of many tokens"))
    return reqs


def test_batched_prefix_reuse_equals_one_pass_per_request(tiny, data_dir):
    model, tok = tiny
    reqs = _requests(data_dir)
    reference = [score_one(model, tok, c, x) for c, x in reqs]
    for batch_size in (1, 5, 64):
        got = loglikelihoods(model, tok, reqs, batch_size=batch_size)
        assert max(abs(a - b) for a, b in zip(got, reference)) < 1e-3, batch_size
    assert len(set(round(x, 3) for x in reference)) > len(reqs) // 2  # really different scores


def test_encode_pair_splits_the_joint_encoding(tiny):
    _, tok = tiny
    prefix, cont = encode_pair(tok, "Sentiment:", " positive", 2048)
    assert prefix + cont == tok("Sentiment: positive").input_ids and cont
    prefix, cont = encode_pair(tok, "x " * 50, " y", 10)  # over the limit: the prompt's start goes
    assert len(prefix) + len(cont) == 10 and cont


def generate(model, tok, prompts, **kwargs):
    return [o["text"] for o in generate_outputs(model, tok, prompts, **kwargs)]


def test_generation_is_greedy_and_cut_at_stop(tiny):
    model, tok = tiny
    prompts = ["Persian: سلام\nEnglish:", "short", "a somewhat longer prompt for left padding"]
    free = generate(model, tok, prompts, max_new_tokens=6, stop=[], batch_size=3)
    one_by_one = [generate(model, tok, [p], max_new_tokens=6, stop=[])[0] for p in prompts]
    assert free == one_by_one  # left padding does not change greedy outputs
    cut_at = free[0][2:4]
    cut = generate(model, tok, prompts[:1], max_new_tokens=6, stop=[cut_at])[0]
    assert cut_at not in cut and free[0].startswith(cut)


def test_rolling_nll_counts_every_token_once(tiny):
    model, tok = tiny
    texts = ["The quick brown fox jumps over the lazy dog. " * 6, "به نام خداوند بخشنده بخشایشگر"]
    whole = text_nll(model, tok, texts, window=512)
    windows = text_nll(model, tok, texts, window=16, batch_size=3)
    for (nll_a, n_a), (nll_b, n_b), text in zip(whole, windows, texts):
        assert n_a == n_b == len(tok(text, add_special_tokens=False).input_ids)
        assert abs(nll_a - nll_b) / nll_a < 0.05  # only context at window starts differs
    ids = torch.tensor([[tok.bos_token_id or tok.eos_token_id] + tok(texts[1], add_special_tokens=False).input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
    direct = -float(logp.gather(-1, ids[0, 1:, None]).sum())
    assert abs(whole[1][0] - direct) < 1e-3


def test_progress_counts_examples_not_requests_or_windows(tiny, data_dir, capsys):
    """Three 4-choice questions are 12 requests and a long text several windows: the counters say 3 and 2."""
    model, tok = tiny
    reqs = _requests(data_dir)[:12]
    loglikelihoods(model, tok, reqs, batch_size=5, progress="mc", owners=[i // 4 for i in range(12)])
    text_nll(model, tok, [" ".join(["word"] * 200), "short"], batch_size=2, window=32, progress="bpc")
    err = capsys.readouterr().err
    assert "mc: 3/3 examples" in err and "bpc: 2/2 examples" in err, err
    assert "12/12" not in err


def _direct_nll(model, ids: list[int]) -> float:
    """The reference: the model's own forward over the whole text, full logits, one text at a time."""
    t = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(t).logits[0, :-1].float(), -1)
    return -float(logp.gather(-1, t[0, 1:, None]).sum())


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_chunked_head_scoring_equals_the_models_own_logits(kind, data_dir, tmp_path, monkeypatch):
    """Texts scored with the vocabulary projection in chunks (here 7 positions, so every text spans several chunks
    and padded rows share a batch) give the model's own full-logit NLL; Gemma 2's soft-capped head included."""
    import transformers as tf

    from langgraft.eval import scoring

    tok = load_base_tokenizer(data_dir, "qwen2", tmp_path / "tok")
    torch.manual_seed(0)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    cfg = (tf.LlamaConfig(**common) if kind == "llama" else
           tf.Gemma2Config(**common, head_dim=8, final_logit_softcapping=0.5, attn_logit_softcapping=None))
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    monkeypatch.setattr(scoring, "HEAD_CHUNK", 7)
    seen = []  # positions per call of the vocabulary projection: never the whole batch's
    model.get_output_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[:-1].numel()))
    texts = ["به نام خداوند بخشنده بخشایشگر و مهربان", "The quick brown fox jumps over the lazy dog. " * 3, "کوتاه"]
    got = text_nll(model, tok, texts, batch_size=3, window=512)
    assert seen and max(seen) <= 7, seen
    seen.clear()
    bos = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    for (nll, n), text in zip(got, texts):
        ids = bos + tok(text, add_special_tokens=False).input_ids
        assert n == len(ids) - 1
        assert abs(nll - _direct_nll(model, ids)) < 1e-3 * max(1.0, nll)
