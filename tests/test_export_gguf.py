"""`langgraft export --gguf`: the GGUF of an extended model reloads (transformers `gguf_file=`) to the HF export's
token ids and logits, for a SentencePiece base (Llama-2) and a byte-level one (Qwen2-style)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.export.gguf import write_gguf
from langgraft.model.extend import extend_model
from langgraft.tokenizer.extend import extend_tokenizer
from langgraft.tokenizer.train import train_tokenizer
from helpers import TOKENIZERS, english_lines, load_base_tokenizer, persian_lines, save_tiny_model

QWEN2_MERGES = 6000  # the first merges of Qwen2's 151,388: a byte-level base small enough for a fast test


def small_qwen2_base(data_dir: Path, out: Path, merges: int = QWEN2_MERGES) -> Path:
    """Qwen2's tokenizer cut to its first `merges` merges (ids follow merge order, so the cut is consistent),
    with its three specials renumbered after the cut: same pre-tokenizer, byte alphabet and chat template."""
    src = data_dir / TOKENIZERS["qwen2"]
    size = 256 + merges
    vocab = {t: i for t, i in json.loads((src / "vocab.json").read_text(encoding="utf-8")).items() if i < size}
    lines = (src / "merges.txt").read_text(encoding="utf-8").splitlines()
    out.mkdir(parents=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("\n".join(lines[: merges + 1]) + "\n", encoding="utf-8")
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {str(size + k): v for k, v in
                                      enumerate(config["added_tokens_decoder"].values())}
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def build_extended(root: Path, data_dir: Path, base_name: str) -> tuple[Path, int]:
    """Tiny random model on the base tokenizer, extended by `tokenizer extend` (a 500-piece Persian SentencePiece
    trained here) and `extend`; returns the model dir and the base vocabulary size."""
    (root / "fa.txt").write_text("\n".join(persian_lines(data_dir, 300)), encoding="utf-8")
    train_tokenizer([root / "fa.txt"], lang="fa", vocab_size=500, out=root / "sp", threads=1)
    if base_name == "llama2":
        base_arg = data_dir / TOKENIZERS["llama2"] / "tokenizer.model"
        base_tok = load_base_tokenizer(data_dir, "llama2", root / "bt")
    else:
        base_arg = small_qwen2_base(data_dir, root / "bt")
        base_tok = AutoTokenizer.from_pretrained(base_arg)
    extend_tokenizer(base_arg, root / "sp", lang="fa", out=root / "tok")
    kind = "llama" if base_name == "llama2" else "qwen2"
    base = save_tiny_model(kind, base_tok, root / "base", hidden=32, layers=2)
    sharpen_attention(base)
    extend_model(base, root / "tok", out=root / "ext")
    return root / "ext", len(base_tok)


def sharpen_attention(model_dir: Path) -> None:
    """Scale the random Q and K projections up so attention is far from uniform: a GGUF with its Q/K rows in the
    wrong order (llama.cpp's rotary layout) then gives visibly different logits, not differences within f16."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(10.0)
    model.save_pretrained(model_dir)


@pytest.fixture(scope="module", params=["llama2", "qwen2"])
def extended(request, tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp(request.param)
    model_dir, n_base = build_extended(root, data_dir, request.param)
    return request.param, model_dir, n_base


def test_gguf_round_trip_ids_and_logits(tmp_path, data_dir, extended):
    base_name, model_dir, n_base = extended
    summary = write_gguf(model_dir, tmp_path / "model.gguf")
    assert summary["tokenizer"] == ("llama" if base_name == "llama2" else "gpt2")
    assert summary["pre_tokenizer"] == ("default" if base_name == "llama2" else "qwen2")
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    gguf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    texts = persian_lines(data_dir, 8)[3:] + english_lines(data_dir, 4)
    for text in texts + [texts[0] + hf_tok.eos_token]:  # special tokens stay whole
        assert gguf_tok(text)["input_ids"] == hf_tok(text)["input_ids"], text
    assert any(i >= n_base for i in hf_tok(texts[0])["input_ids"])  # the new pieces are in play
    assert gguf_tok.chat_template == hf_tok.chat_template
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    gg = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    for text in (texts[0], texts[-1]):
        ids = hf_tok(text, return_tensors="pt")["input_ids"][:, :32]
        with torch.no_grad():
            a, b = hf(ids).logits, gg(ids).logits
        torch.testing.assert_close(b, a, rtol=1e-2, atol=2e-3)  # f16 weights


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """A few align steps on the extended Qwen2-style model: a finished `langgraft train` run."""
    from langgraft.train.stages import train
    from helpers import train_config

    root = tmp_path_factory.mktemp("run")
    model_dir, _ = build_extended(root, data_dir, "qwen2")
    cfg = train_config(model_dir, data_dir, root, 50, 10, dataset_name="fa_news", max_steps=3, checkpoint_every=0,
                       eval_every=0, optim={"lr": 1e-2, "embed_lr": 1e-2})
    train("align", cfg, out=root / "train")
    return root


def test_export_cli_writes_gguf_and_model_card(trained_run, data_dir, capsys):
    import yaml

    from langgraft.cli import main

    out = trained_run / "export"
    assert main(["export", "--run", str(trained_run / "train"), "--out", str(out), "--gguf"]) == 0
    assert "model.gguf" in capsys.readouterr().out
    modelfile = (out / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith("FROM ./model.gguf\n") and 'TEMPLATE """' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "{{ .Content }}" in modelfile
    hf_tok = AutoTokenizer.from_pretrained(out / "model")
    gguf_tok = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    text = persian_lines(data_dir, 1)[0]
    ids = hf_tok(text, return_tensors="pt")["input_ids"][:, :24]
    assert gguf_tok(text)["input_ids"][:24] == ids[0].tolist()
    merged = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    gg = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(gg(ids).logits, merged(ids).logits, rtol=1e-2, atol=2e-3)

    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["language"] == ["fa", "en"] and header["library_name"] == "transformers"
    assert {"langgraft", "align", "gguf"} <= set(header["tags"]) and header["datasets"] == ["fa_news"]
    assert "base_model" not in header  # a local folder is not a hub id
    train_summary = json.loads((trained_run / "train" / "manifest.json").read_text())["summary"]
    tok_summary = json.loads((trained_run / "tok" / "manifest.json").read_text())["summary"]
    row = next(line for line in card.splitlines() if line.startswith("| align |"))
    assert f"| {train_summary['steps']} | {train_summary['tokens']} |" in row
    assert f"+{tok_summary['added']} fa pieces" in card
    assert "No evaluation was recorded" in card and "`../model.gguf`: GGUF (f16" in card


def test_model_card_without_gguf_and_with_evaluations(trained_run, tmp_path):
    """The card's evaluation table comes from the run folder's eval results (a `langgraft run` layout)."""
    from langgraft.export.run import export_run
    from langgraft.export.modelcard import gather, render

    layout = tmp_path / "out"
    (layout / "align").mkdir(parents=True)
    shutil.copytree(trained_run / "train", layout / "align" / "train")
    results = {"models": {"base": "b", "align": "a"},
               "tasks": {"bpc_fa": {"kind": "intrinsic", "metrics": ["bpc"], "lang": "fa", "n": 7}},
               "results": {"base": {"bpc_fa": {"bpc": {"value": 3.25}}}, "align": {"bpc_fa": {"bpc": {"value": 2.5}}}}}
    (layout / "report" / "eval").mkdir(parents=True)
    (layout / "eval" / "base").mkdir(parents=True)
    (layout / "report" / "eval" / "results.json").write_text(json.dumps(results))
    card = render(gather(layout / "align" / "train"))
    assert "| bpc_fa | fa | bpc | 7 | 3.250 | 2.500 |" in card and "gguf" not in card.split("---")[1]
    summary = export_run(trained_run / "train", out=tmp_path / "plain")
    assert "gguf" not in summary and not (tmp_path / "plain" / "model.gguf").exists()
    assert (tmp_path / "plain" / "model" / "README.md").is_file()


def _break(model_dir: Path, how: str) -> str:
    """Damage a copy of a model folder one way; returns what the error line must name."""
    cfg_path, tok_path = model_dir / "config.json", model_dir / "tokenizer.json"
    cfg, tok = json.loads(cfg_path.read_text()), json.loads(tok_path.read_text(encoding="utf-8"))
    if how == "architecture":
        cfg["model_type"] = "phi3"
    elif how == "rope":
        cfg["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    elif how == "pre_tokenizer":
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
                                                                    {"type": "ByteLevel", "use_regex": False}]}
    elif how == "model":
        tok["model"]["type"] = "WordPiece"
    elif how == "tensor":
        from safetensors.torch import load_file, save_file

        weights = load_file(model_dir / "model.safetensors")
        weights["model.extra_adapter.weight"] = torch.zeros(4, 4)
        save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
        return "model.extra_adapter.weight"
    cfg_path.write_text(json.dumps(cfg))
    tok_path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    return {"architecture": "phi3", "rope": "llama3", "pre_tokenizer": "WhitespaceSplit+ByteLevel",
            "model": "WordPiece"}[how]


@pytest.mark.parametrize("how", ["architecture", "rope", "pre_tokenizer", "model", "tensor"])
def test_unsupported_model_is_one_line_and_leaves_nothing(tmp_path, trained_run, how):
    from langgraft.errors import UserError

    broken = tmp_path / "m"
    shutil.copytree(trained_run / "ext", broken)
    named = _break(broken, how)
    with pytest.raises(UserError, match=re.escape(named)) as exc:
        write_gguf(broken, tmp_path / "model.gguf")
    assert "\n" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no model.gguf, no temporary file


def test_gguf_type_is_checked_first(tmp_path, trained_run):
    from langgraft.errors import UserError

    with pytest.raises(UserError, match="--gguf-type q4_k_m: choose from f16, bf16, q8_0, q4_0, f32"):
        write_gguf(trained_run / "ext", tmp_path / "model.gguf", gguf_type="q4_k_m")
    assert not (tmp_path / "model.gguf").exists()


@pytest.mark.parametrize("gguf_type,tol", [("bf16", 1e-2), ("q8_0", 3e-2), ("q4_0", 0.3), ("f32", 1e-5)])
def test_bf16_and_q8_0_load_back_within_their_precision(tmp_path, trained_run, data_dir, gguf_type, tol):
    model_dir = trained_run / "ext"
    summary = write_gguf(model_dir, tmp_path / "model.gguf", gguf_type=gguf_type)
    assert set(summary["tensor_types"]) == {gguf_type.upper(), "F32"}  # norms stay F32, as llama.cpp keeps them
    ids = AutoTokenizer.from_pretrained(model_dir)(persian_lines(data_dir, 1)[0], return_tensors="pt")["input_ids"]
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    gg = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        a, b = hf(ids[:, :24]).logits, gg(ids[:, :24]).logits
    assert (a - b).abs().max() < tol * a.abs().max()
    assert (a - b).abs().max() > 0 or gguf_type == "f32"  # really the lower precision, not a float copy


@pytest.mark.parametrize("name,expected", [("llama3", "llama-bpe"), ("qwen2", "qwen2"), ("gpt2", "gpt-2")])
def test_byte_level_bases_get_llama_cpp_pre_tokenizer_names(data_dir, name, expected):
    """The real base tokenizers as `tokenizer extend` loads them; the name follows the rules, not the token ids."""
    from langgraft.export.gguf import gguf_pre_name
    from langgraft.tokenizer.bases import load_base

    path = data_dir / "tokenizers" / name
    base = load_base(path / "tokenizer.model" if name == "llama3" else path)
    assert gguf_pre_name(json.loads(base.backend.to_str()), path) == expected


@pytest.mark.parametrize("kind", ["mistral", "gemma2"])
def test_mistral_and_gemma2_round_trip(tmp_path, data_dir, kind):
    """Mistral goes through llama.cpp's `llama` graph (Q/K rows reordered; attention sharpened so that matters);
    Gemma-2 has a tied head and norms stored as 1 + w (randomised here so that a missing shift fails)."""
    import transformers

    tok_dir = small_qwen2_base(data_dir, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if kind == "mistral":
        config = transformers.MistralConfig(**common, sliding_window=None, tie_word_embeddings=False)
    else:
        config = transformers.Gemma2Config(**common, head_dim=256, query_pre_attn_scalar=256)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # Gemma stores norms as offsets from 1
                param.normal_(0.0 if kind == "gemma2" else 1.0, 0.3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    sharpen_attention(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    summary = write_gguf(tmp_path / "m", tmp_path / "model.gguf")
    assert summary["architecture"] == {"mistral": "llama", "gemma2": "gemma2"}[kind]
    assert summary["tensor_types"]["F16"] == {"mistral": 16, "gemma2": 15}[kind]  # gemma2: no output.weight (tied)
    ids = tok(english_lines(data_dir, 1)[0], return_tensors="pt")["input_ids"][:, :24]
    gg = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(gg(ids).logits, model(ids).logits, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("data_licenses,header,says", [
    (["apache-2.0"], "apache-2.0", "the training data's are fa_news: apache-2.0."),
    (["CC BY-NC-SA 4.0"], "other", "for non-commercial use only"),
    (None, "other", "no recorded licence"),  # a dataset.json written before licences were recorded
    (["apache-2.0", "CC BY-SA 4.0"], "other", "fa_news: CC BY-SA 4.0, apache-2.0"),
])
def test_model_card_license_follows_the_base_and_the_training_data(trained_run, tmp_path, data_licenses, header,
                                                                   says):
    """The base card's licence only when every training dataset has the same one; else "other" with each listed,
    and non-commercial data said so. The card names no local folder."""
    import yaml

    from langgraft.export.modelcard import gather, render

    base = tmp_path / "base"
    shutil.copytree(trained_run / "base", base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# a base\n", encoding="utf-8")
    manifest = json.loads((trained_run / "ext" / "manifest.json").read_text())
    ext = tmp_path / "ext"
    shutil.copytree(trained_run / "ext", ext)
    manifest["config"]["model"] = str(base)
    (ext / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "train"
    shutil.copytree(trained_run / "train", run, ignore=shutil.ignore_patterns("checkpoints", "adapter"))
    run_manifest = json.loads((run / "manifest.json").read_text())
    dataset = tmp_path / "fa_news"
    shutil.copytree(run_manifest["config"]["data"]["dataset"], dataset)
    info = json.loads((dataset / "dataset.json").read_text())
    info.pop("licenses", None)
    if data_licenses is not None:
        info["licenses"] = sorted(data_licenses)
    (dataset / "dataset.json").write_text(json.dumps(info))
    run_manifest["config"]["model"] = str(ext)
    run_manifest["config"]["data"]["dataset"] = str(dataset)
    (run / "manifest.json").write_text(json.dumps(run_manifest))
    card = render(gather(run))
    assert yaml.safe_load(card.split("---\n")[1])["license"] == header
    assert "the base model's is apache-2.0" in card and says in card, card
    assert str(tmp_path) not in card and "/tmp" not in card
    stage_row = next(line for line in card.splitlines() if line.startswith("| align |"))
    assert f"rows {run_manifest['config']['optim']['embed_lr']}" in stage_row  # the rate the rows trained at


def test_export_cli_refuses_an_unsupported_model_before_merging(trained_run, tmp_path, capsys):
    from langgraft.cli import main

    ext, run = tmp_path / "ext", tmp_path / "train"
    shutil.copytree(trained_run / "ext", ext)
    config = json.loads((ext / "config.json").read_text())
    (ext / "config.json").write_text(json.dumps({**config, "model_type": "phi3"}))
    shutil.copytree(trained_run / "train", run, ignore=shutil.ignore_patterns("checkpoints"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["model"] = str(ext)
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "out"), "--gguf-type", "q8_0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langgraft: error: ") and "model_type 'phi3' has no GGUF writer" in err
    assert "\n" not in err and not (tmp_path / "out").exists()


def _collapsing_sentencepiece(root: Path) -> Path:
    """A SentencePiece BPE model trained with SentencePiece's own defaults (remove_extra_whitespaces: runs of
    spaces collapse, which llama.cpp's tokenizer never does)."""
    import sentencepiece as spm

    from langgraft.demo import demo_file

    spm.SentencePieceTrainer.train(input=str(demo_file("en.txt")), model_prefix=str(root / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, minloglevel=2)
    return root / "sp.model"


@pytest.mark.parametrize("how", ["collapsed spaces", "missing merge", "no gguf package"])
def test_export_gguf_refuses_what_llama_cpp_cannot_tokenize_before_merging(trained_run, tmp_path, capsys,
                                                                          monkeypatch, how):
    """A vocabulary llama.cpp cannot represent, or no gguf package: one line, before any merging, nothing written."""
    import sys

    import langgraft.export.run
    from langgraft.cli import main
    from langgraft.tokenizer.bases import load_base

    ext, run = tmp_path / "ext", tmp_path / "train"
    shutil.copytree(trained_run / "ext", ext)
    load_base(_collapsing_sentencepiece(tmp_path)).hf.save_pretrained(ext)
    spec = json.loads((ext / "tokenizer.json").read_text(encoding="utf-8"))
    if how == "missing merge":
        spec["normalizer"]["normalizers"] = spec["normalizer"]["normalizers"][-2:]  # Prepend + Replace only
        dropped = spec["model"]["merges"].pop(40)
        needle = "no merge makes them"
    elif how == "collapsed spaces":
        needle = "has no llama.cpp form"
    else:
        monkeypatch.setitem(sys.modules, "gguf", None)  # what `import gguf` sees when it is not installed
        needle = "writing GGUF files needs the gguf package"
    (ext / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    shutil.copytree(trained_run / "train", run, ignore=shutil.ignore_patterns("checkpoints"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["model"] = str(ext)
    (run / "manifest.json").write_text(json.dumps(manifest))

    def merging(*args, **kwargs):
        raise AssertionError("the export started merging")

    monkeypatch.setattr(langgraft.export.run, "_export", merging)
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "out"), "--gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langgraft: error: ") and needle in err and "\n" not in err, err
    assert "reading" not in err
    if how == "missing merge":
        assert "".join(dropped) in err or "tokens (e.g." in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("name,template", [("qwen2", True), ("llama3", True), ("mistral", False), ("llama2", None)])
def test_modelfile_template_renders_like_the_jinja_template(data_dir, tmp_path, name, template):
    """A turn-by-turn chat template becomes a Go template that renders (written out by the same parts) what the
    Jinja template renders; one that is not (Mistral v0.3 moves the system message) gets no TEMPLATE line."""
    from langgraft.export.modelfile import _render, _render_parts, chat_parts, write_modelfile
    from langgraft.tokenizer.bases import load_base

    base = {"llama3": "tokenizers/llama3/tokenizer.model", "llama2": "tokenizers/llama2/tokenizer.model",
            "mistral": "tokenizers/mistral-7b-v0.3", "qwen2": "tokenizers/qwen2"}[name]
    tok = load_base(data_dir / base).hf
    tok.save_pretrained(tmp_path / "tok")
    written = write_modelfile(tmp_path / "tok", tmp_path, "model.gguf")
    text = (tmp_path / "Modelfile").read_text(encoding="utf-8")
    assert text.startswith("FROM ./model.gguf\n") and f'PARAMETER stop "{tok.eos_token}"' in text
    assert written["template"] == bool(template) and ('TEMPLATE """' in text) == bool(template)
    assert ("no Go form" in text) == (template is False)
    if template:
        parts = chat_parts(tok)
        chat = [("system", "تو یک دستیار هستی."), ("user", "سلام"), ("assistant", "سلام! Hi."), ("user", "۲+۲؟")]
        assert _render_parts(parts, chat) == _render(tok, chat, generate=True)
        assert text.count("{{ .Content }}") == 2 and "{{ .System }}" in text
