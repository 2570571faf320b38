"""`langgraft import-gguf`: a GGUF file the test writes itself (the gguf package's GGUFWriter, GPT-2's real
byte-level vocabulary and merges, cut short; a tiny random Llama) comes back as an HF model folder whose weights and tokenization equal
the source; bad files are one error line, exit 2, and leave nothing behind."""

from __future__ import annotations

import json
import sys

import gguf  # in the `test` extra: a missing package fails these tests rather than skipping them
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from langgraft.cli import main
from langgraft.errors import UserError
from langgraft.ggufio.read import gguf_info, import_gguf
from helpers import english_lines, persian_lines


MERGES = 3000
SOURCES: dict = {}  # GGUF path -> the HF model written into it
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for Q/K (rotary pairs interleaved); transformers undoes it on load."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, tokenizer, *, tied: bool, qtype=None, arch: str = "llama", seed: int = 0,
                    pre: str = "gpt-2"):
    """A random tiny Llama with `tokenizer`'s vocabulary as a GGUF file; returns the HF model it holds."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied, rms_norm_eps=1e-5, rope_theta=10000.0)
    model = LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_ids)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for _, i in vocab])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_chat_template(CHATML)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue
        data = tensor.numpy().astype(np.float32)
        if key.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        name = names.get_name(key, try_suffixes=(".weight",))
        if qtype is not None and data.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, data_dir):
    """GPT-2's byte-level BPE cut to its first MERGES merges (bytes + their products + <|endoftext|>): the real
    vocabulary and merge order, small enough that transformers' GGUF reader (which parses the token table once
    per config, tokenizer and model load) stays fast."""
    src = data_dir / "tokenizers/gpt2"
    vocab = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
    merges = [m for m in (src / "merges.txt").read_text(encoding="utf-8").splitlines() if m and not m.startswith("#")]
    merges = merges[:MERGES]
    keep = {t for t, i in vocab.items() if len(t) == 1} | {"".join(m.split(" ")) for m in merges} | {"<|endoftext|>"}
    ids = {t: n for n, t in enumerate(sorted(keep, key=vocab.__getitem__))}
    out = tmp_path_factory.mktemp("gpt2-small")
    (out / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_bytes((src / name).read_bytes())
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == len(ids) and tok.eos_token_id == ids["<|endoftext|>"]
    return tok


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, gpt2):
    """One tied float32 GGUF for the tests that fail before reading weights (written once: 50k-token vocabulary)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    SOURCES[path] = write_tiny_gguf(path, gpt2, tied=True)
    return path


def _expected(model, qtype):
    """The source weights as the file stores them: exact floats, or what the quantisation keeps."""
    state = model.state_dict()
    if qtype is None:
        return state
    return {k: torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(v.numpy(), qtype), qtype))
            if v.ndim == 2 else v for k, v in state.items()}


@pytest.mark.parametrize("tied,qtype", [(True, None), (False, gguf.GGMLQuantizationType.Q8_0)],
                         ids=["tied-f32", "untied-q8_0"])
def test_import_reproduces_weights_tokenizer_and_outputs(tmp_path, data_dir, gpt2, tied, qtype):
    src = write_tiny_gguf(tmp_path / "tiny.gguf", gpt2, tied=tied, qtype=qtype)
    assert main(["import-gguf", str(tmp_path / "tiny.gguf"), "--out", str(tmp_path / "hf")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    got, want = model.state_dict(), _expected(src, qtype)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    assert model.config.tie_word_embeddings is tied
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) is tied
    assert "quantization_config" not in json.loads((tmp_path / "hf/config.json").read_text())
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in persian_lines(data_dir, 5) + english_lines(data_dir, 5) + ["  two  spaces\tand a tab <|endoftext|>"]:
        assert tok(text)["input_ids"] == gpt2(text)["input_ids"], text
    assert tok.chat_template == CHATML
    gen = json.loads((tmp_path / "hf/generation_config.json").read_text())
    assert gen["eos_token_id"] == gpt2.eos_token_id
    if qtype is None:  # the same weights compute the same thing
        ids = gpt2("The capital of France is Paris.", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, src(ids).logits, rtol=1e-5, atol=1e-5)


def test_smollm_files_keep_digits_apart(tmp_path, gpt2):
    """llama.cpp's `smollm` pre-tokenizer splits every digit apart before GPT-2's byte-level rule; transformers'
    reader drops that step, the import puts it back (and a plain `gpt-2` file keeps GPT-2's digit merges)."""
    texts = ["In 2024, 1,500 people paid $3.99 each.", "call 555-1234 now", "x = 12345678 and 00"]
    digits = {}
    for pre in ("smollm", "gpt-2"):
        write_tiny_gguf(tmp_path / f"{pre}.gguf", gpt2, tied=True, pre=pre)
        assert main(["import-gguf", str(tmp_path / f"{pre}.gguf"), "--out", str(tmp_path / pre)]) == 0
        tok = AutoTokenizer.from_pretrained(tmp_path / pre)
        pieces = [p for text in texts for p in tok.tokenize(text)]
        digits[pre] = [p.lstrip("Ġ") for p in pieces if p.lstrip("Ġ").isdigit()]
    assert digits["smollm"] and all(len(d) == 1 for d in digits["smollm"])
    assert "".join(digits["smollm"]) == "".join(digits["gpt-2"])  # the same digits, only split differently
    assert any(len(d) > 1 for d in digits["gpt-2"])


def test_dtype_option_casts_the_saved_weights(tmp_path, tiny_gguf):
    assert main(["import-gguf", str(tiny_gguf), "--out", str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert model.dtype == torch.bfloat16
    want = SOURCES[tiny_gguf].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, want[key].to(torch.bfloat16)), key


def _fails(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("langgraft: error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _no_output(tmp_path, out_name="hf"):
    assert not (tmp_path / out_name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out_name}")]  # no temp sibling left


def test_bad_files_are_one_line_and_leave_nothing(tmp_path, capsys, tiny_gguf):
    blob = tiny_gguf.read_bytes()
    out = str(tmp_path / "hf")
    cases = {
        "text.gguf": ("hello, not a model\n".encode(), "not a GGUF file"),
        "model.safetensors": (b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", "not a GGUF file"),
        "empty.gguf": (b"", "not a GGUF file"),
        "cut-data.gguf": (blob[: len(blob) - 1000], "truncated"),
        "cut-header.gguf": (blob[:200], "truncated"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        _fails(["import-gguf", str(tmp_path / name), "--out", out], capsys, str(tmp_path / name), needle)
        _no_output(tmp_path)
    _fails(["import-gguf", str(tmp_path / "missing.gguf"), "--out", out], capsys, "not found")
    _no_output(tmp_path)


def test_unreadable_architecture_is_one_line(tmp_path, capsys, gpt2):
    write_tiny_gguf(tmp_path / "odd.gguf", gpt2, tied=True, arch="rwkv6")
    line = _fails(["import-gguf", str(tmp_path / "odd.gguf"), "--out", str(tmp_path / "hf")], capsys, "rwkv6")
    assert "transformers cannot read" in line
    _no_output(tmp_path)


def test_existing_out_is_refused_untouched(tmp_path, capsys, tiny_gguf):
    for name, make in (("dir", lambda p: p.mkdir()), ("file", lambda p: p.write_text("keep me"))):
        out = tmp_path / name
        make(out)
        _fails(["import-gguf", str(tiny_gguf), "--out", str(out)], capsys, "exists")
        assert (out.is_dir() and not any(out.iterdir())) if name == "dir" else out.read_text() == "keep me"


def test_missing_gguf_package_is_one_line(tmp_path, monkeypatch, tiny_gguf):
    monkeypatch.setitem(sys.modules, "gguf", None)  # what `import gguf` sees when it is not installed
    with pytest.raises(UserError, match=r"gguf package.*langgraft\[real\]"):
        gguf_info(tiny_gguf)
    with pytest.raises(UserError, match="gguf package"):
        import_gguf(tiny_gguf, tmp_path / "hf")
    _no_output(tmp_path)
