"""Model extension on the real `tokenizer extend` output: SentencePiece and byte-level BPE bases."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.model.extend import extend_model
from langgraft.tokenizer.extend import extend_tokenizer
from langgraft.tokenizer.train import train_tokenizer
from helpers import TOKENIZERS, english_lines, load_base_tokenizer, persian_lines, save_tiny_model


@pytest.mark.parametrize("base_name", ["llama2", "qwen2"])
def test_extend_model_on_real_extended_tokenizer(tmp_path, data_dir, base_name):
    (tmp_path / "fa.txt").write_text("\n".join(persian_lines(data_dir, 400)), encoding="utf-8")
    train_tokenizer([tmp_path / "fa.txt"], lang="fa", vocab_size=400, out=tmp_path / "sp", threads=1)
    base_src = data_dir / TOKENIZERS[base_name]
    base_arg = base_src / "tokenizer.model" if base_name == "llama2" else base_src
    extend_tokenizer(base_arg, tmp_path / "sp", lang="fa", out=tmp_path / "tok")
    base_tok = load_base_tokenizer(data_dir, base_name, tmp_path / "bt")
    base = save_tiny_model("qwen2" if base_name == "qwen2" else "llama", base_tok, tmp_path / "base", hidden=16,
                           layers=1)
    report = extend_model(base, tmp_path / "tok", out=tmp_path / "ext")
    new_tokens = json.loads((tmp_path / "tok" / "new_tokens.json").read_text())
    assert report["new_tokens"] == len(new_tokens["tokens"]) > 20
    old, new = AutoModelForCausalLM.from_pretrained(base), AutoModelForCausalLM.from_pretrained(tmp_path / "ext")
    n_base = new_tokens["base_vocab_size"]
    ids = base_tok(english_lines(data_dir, 1)[0], return_tensors="pt")["input_ids"][:, :16]
    with torch.no_grad():
        assert torch.equal(old(ids).logits[..., :n_base], new(ids).logits[..., :n_base])
    for tok in new_tokens["tokens"][:20]:  # rows are the means of the base pieces new_tokens.json names
        want = old.get_input_embeddings().weight[tok["base_ids"]].mean(0)
        torch.testing.assert_close(new.get_input_embeddings().weight[tok["id"]], want)
    # Persian now uses the new rows through the extended tokenizer loaded from the model dir
    fa_ids = AutoTokenizer.from_pretrained(tmp_path / "ext")(persian_lines(data_dir, 1)[0])["input_ids"]
    assert any(i >= n_base for i in fa_ids)
