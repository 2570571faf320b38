"""objective: distill — the new rows learn the base's likelihood of text (train/distill.py), on tiny random models
extended with a real byte-level tokenizer: only new rows change, the teacher sequence is the same text, the loss
is zero when the student is the teacher, and settings without a teacher are one clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.errors import UserError
from langgraft.export.run import export_run
from langgraft.formats.new_tokens import read_new_tokens
from langgraft.train.distill import (DistillLossModule, check_distill, piece_table, span_loss, teacher_batch,
                                     token_logprobs)
from langgraft.train.stages import train
from helpers import english_lines, make_extended_model, persian_lines, train_config


@pytest.fixture(scope="module")
def ext(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("distill")
    return {"tmp": tmp, "data_dir": data_dir,
            "llama": make_extended_model(tmp / "llama", data_dir, "llama", "gpt2", n_new=30),
            "gemma": make_extended_model(tmp / "gemma", data_dir, "gemma", "gpt2", n_new=30)}


def _cfg(ext, kind: str, name: str, **raw):
    settings = {"objective": "distill", "max_steps": 4, "checkpoint_every": 0, "eval_every": 0, "eval_batches": 2,
                "log_every": 1, "optim": {"lr": 1e-2, "warmup_ratio": 0.0}, **raw}
    return train_config(ext[kind], ext["data_dir"], ext["tmp"] / name, 40, 8, **settings)


def _module(model_dir, base_vocab_size=None):
    import peft

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    new = read_new_tokens(model_dir)
    pm = peft.get_peft_model(model, peft.TrainableTokensConfig(target_modules=["embed_tokens"],
                                                               token_indices=[t["id"] for t in new["tokens"]]))
    table = piece_table(new, model.get_input_embeddings().weight.shape[0], str(model_dir))
    return DistillLossModule(pm, 0, table, base_vocab_size or new["base_vocab_size"])


def _ids(tok, texts):
    rows = [tok(t, add_special_tokens=False)["input_ids"][:24] for t in texts]
    width = min(map(len, rows))
    return torch.tensor([r[:width] for r in rows])


@pytest.mark.parametrize("kind", ["llama", "gemma"])
def test_distill_trains_only_new_rows(ext, kind):
    out = ext["tmp"] / f"{kind}-run"
    summary = train("align", _cfg(ext, kind, kind), out=out)
    assert summary["steps"] == 4 and summary["trained_rows"] == 30
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0], losses
    export_run(out, out=ext["tmp"] / f"{kind}-export")
    merged = load_file(ext["tmp"] / f"{kind}-export" / "model" / "model.safetensors")
    parent = load_file(ext[kind] / "model.safetensors")
    new = [t["id"] for t in read_new_tokens(ext[kind])["tokens"]]
    old = torch.ones(parent["model.embed_tokens.weight"].shape[0], dtype=torch.bool)
    old[new] = False
    for name, weight in parent.items():
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            assert torch.equal(merged[name][old], weight[old]), name
            assert not torch.equal(merged[name][new], weight[new]), name
        else:
            assert torch.equal(merged[name], weight), name


def test_teacher_sequence_is_the_same_text(ext):
    tok = AutoTokenizer.from_pretrained(ext["llama"])
    text = " ".join(persian_lines(ext["data_dir"], 3))
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    table = piece_table(read_new_tokens(ext["llama"]), len(tok), "x")
    t_ids, ends = teacher_batch(ids, table)
    assert (ids >= len(tok) - 30).any()  # the text has new tokens
    assert t_ids.shape[1] > ids.shape[1] and int(t_ids.max()) < len(tok) - 30
    assert tok.decode(t_ids[0]) == tok.decode(ids[0]) == text
    # every student token boundary is a teacher boundary of the same prefix
    assert all(tok.decode(t_ids[0, :e]) == tok.decode(ids[0, :t + 1]) for t, e in enumerate(ends[0].tolist()))


def test_loss_is_zero_when_the_student_is_the_teacher(ext):
    """Text of old tokens and a teacher that sees every head row (padding too): student and teacher are one
    distribution."""
    tok = AutoTokenizer.from_pretrained(ext["llama"])
    ids = _ids(tok, english_lines(ext["data_dir"], 2))
    rows = AutoModelForCausalLM.from_pretrained(ext["llama"]).config.vocab_size
    same = _module(ext["llama"], base_vocab_size=rows)
    with torch.no_grad():
        assert float(same(ids)) < 1e-9
    # the real teacher (the base's rows only) differs: new rows take probability from old tokens, and Persian
    # text is scored on new tokens by one model, on pieces by the other
    real = _module(ext["llama"])
    with torch.no_grad():
        assert float(real(ids)) > 0
        assert float(real(_ids(tok, persian_lines(ext["data_dir"], 2)))) > 0


def test_token_logprobs_match_log_softmax_and_gradient_reaches_only_delta():
    torch.manual_seed(0)
    h, w = torch.randn(2, 5, 8, requires_grad=True), torch.randn(12, 8)
    idx, delta = torch.tensor([9, 10]), torch.randn(2, 8, requires_grad=True)
    y = torch.randint(0, 12, (2, 5))
    got = token_logprobs(h, w, y, delta=delta, idx=idx, chunk=3)
    ref = (h @ w.index_copy(0, idx, delta).t()).log_softmax(-1).gather(2, y[..., None])[..., 0]
    assert torch.allclose(got, ref, atol=1e-6)
    got.sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    y9 = y.clamp(max=8)  # the teacher: the first 9 rows only
    first = token_logprobs(h.detach(), w, y9, rows=9)
    assert torch.allclose(first, (h.detach() @ w[:9].t()).log_softmax(-1).gather(2, y9[..., None])[..., 0], atol=1e-6)


def test_span_loss_sums_teacher_pieces():
    student = torch.tensor([[-1.0, -2.0]])  # tokens 1, 2
    ends = torch.tensor([[1, 3, 4]])  # token 0 → teacher 0; token 1 → teacher 1..2; token 2 → teacher 3
    teacher = torch.tensor([[-0.5, -0.5, -3.0]])  # log p of teacher tokens 1, 2, 3
    assert float(span_loss(student, teacher, ends)) == pytest.approx(((0.0) ** 2 + 1.0 ** 2) / 2)


def test_settings_without_a_teacher_are_one_line(ext):
    for stage, rows, needle in (("pretrain", "new", "--stage align"), ("align", "all", "rows: new"),
                                ("instruct", "new", "--stage align")):
        with pytest.raises(UserError) as err:
            check_distill(stage, rows)
        assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="only in --stage align"):
        train("pretrain", _cfg(ext, "llama", "bad-stage"), out=ext["tmp"] / "bad-stage-run")
    assert not (ext["tmp"] / "bad-stage-run").exists()
    with pytest.raises(UserError, match="needs rows: new"):
        train("align", _cfg(ext, "llama", "bad-rows", rows="all"), out=ext["tmp"] / "bad-rows-run")
    new = read_new_tokens(ext["llama"])
    new["tokens"][0]["base_ids"] = []
    with pytest.raises(UserError, match="has no base_ids"):
        piece_table(new, new["vocab_size"], "extended")
