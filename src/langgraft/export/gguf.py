"""Writing (`langgraft export --gguf`): `write_gguf` turns an HF model folder into one GGUF file with the gguf
package's writer, the way llama.cpp's convert_hf_to_gguf.py does: its tensor names, hyper-parameter keys and Q/K
row order, and the extended tokenizer as metadata — SentencePiece-style vocabularies as pieces with scores and
types, byte-level ones as tokens, merges and the base's pre-tokenizer name, recognised by its rules rather than
by hashing token ids (which any new token changes). `check_gguf_writable` says in one line what has no GGUF form.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.ggufio import gguf_module
from langgraft.tokenizer.bases import bpe_kind

# Writing follows llama.cpp's convert_hf_to_gguf.py (tensor names, metadata keys, the Q/K row order of its `llama`
# graph, the tokenizer fields) through the gguf package's own writer and tables, so no llama.cpp build is needed.
GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_0", "f32")  # f32: exact, for checking a conversion; q4_0: the gguf
# package's 4-bit type (k-quants such as Q4_K_M need llama.cpp's llama-quantize: docs/EXPORT.md)
# HF model_type → llama.cpp architecture; Mistral runs on llama.cpp's `llama` graph, as its converter writes it.
GGUF_ARCHES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma2": "gemma2"}
# Byte-level pre-tokenizers by their rules, under llama.cpp's `tokenizer.ggml.pre` names. Extending a vocabulary
# adds tokens and merges but no pre-tokenizer rule, so the extended tokenizer keeps its base's name; this is what
# llama.cpp's converter cannot see (it hashes the token ids of a test string, which the new tokens change).
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def write_gguf(model_dir: str | Path, out_file: str | Path, *, gguf_type: str = "f16", name: str = "") -> dict:
    """Write the HF causal LM in `model_dir` (config, safetensors, tokenizer.json) as one GGUF file.

    The file appears only when complete (written to a temporary sibling, then renamed)."""
    import json
    import os

    model_dir, out_file = Path(model_dir), Path(out_file)
    vocab = check_gguf_writable(model_dir, gguf_type)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = _gguf_arch(config, model_dir)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    try:
        writer = gguf_module("writing").GGUFWriter(str(tmp), arch, use_temp_file=True)
        _write_hparams(writer, config, gguf_type, name or model_dir.name)
        _write_vocab(writer, vocab, model_dir)
        counts = _write_tensors(writer, model_dir, config, arch, gguf_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": out_file.name, "architecture": arch, "type": gguf_type, "tokenizer": vocab["model"],
            "pre_tokenizer": vocab["pre"], "tokens": len(vocab["tokens"]), "tensor_types": counts,
            "mb": round(out_file.stat().st_size / 2**20, 3)}


def check_gguf_writable(model_dir: str | Path, gguf_type: str) -> dict:
    """One UserError line when `model_dir` (a local HF model folder) has no GGUF form here, checked in a second
    and before anything is merged or written: the GGML type, the gguf package, the architecture, and whether
    llama.cpp can tokenize exactly like tokenizer.json (its kind, pre-tokenizer, normalizer and merges).
    Returns the GGUF vocabulary."""
    import json

    model_dir = Path(model_dir)
    if gguf_type not in GGUF_TYPES:
        raise UserError(f"--gguf-type {gguf_type}: choose from {', '.join(GGUF_TYPES)}")
    gguf_module("writing")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json (writing a GGUF file needs a local HF model folder)")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    _gguf_arch(config, model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"{model_dir}: no tokenizer.json (writing a GGUF file needs the fast tokenizer file)")
    return _gguf_vocab(model_dir, int(config["vocab_size"]))


def _gguf_arch(config: dict, model_dir: Path) -> str:
    model_type = config.get("model_type")
    if model_type not in GGUF_ARCHES:
        raise UserError(f"{model_dir / 'config.json'}: model_type {model_type!r} has no GGUF writer "
                        f"(supported: {', '.join(GGUF_ARCHES)})")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear"):
        raise UserError(f"{model_dir / 'config.json'}: rope_type {rope_type!r} has no GGUF writer "
                        "(supported: default, linear)")
    for flag in ("attention_bias", "mlp_bias"):
        if model_type in ("llama", "mistral") and config.get(flag):
            raise UserError(f"{model_dir / 'config.json'}: {flag}=true has no GGUF writer for {model_type}")
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if model_type == "gemma2" and config.get("query_pre_attn_scalar", head_dim) != head_dim:
        # llama.cpp scales Gemma-2 queries by the head size (the 2B and 9B models; 27B is told apart by size)
        raise UserError(f"{model_dir / 'config.json'}: query_pre_attn_scalar {config['query_pre_attn_scalar']} "
                        f"!= head_dim {head_dim} has no GGUF writer")
    return GGUF_ARCHES[model_type]


def _write_hparams(writer, config: dict, gguf_type: str, name: str) -> None:
    gguf = gguf_module("writing")
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                          "f32": gguf.LlamaFileType.ALL_F32}[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != int(config["hidden_size"]) // heads or config["model_type"] == "gemma2":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if (rope.get("rope_type") or rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if config["model_type"] == "gemma2":
        writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or 0.0))
        writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or 0.0))
        writer.add_sliding_window(int(config.get("sliding_window") or 0))


def _write_tensors(writer, model_dir: Path, config: dict, arch: str, gguf_type: str) -> dict:
    """Every weight under its llama.cpp name; returns how many tensors got each GGML type."""
    import numpy as np
    from safetensors import safe_open

    gguf = gguf_module("writing")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(config["num_hidden_layers"]))
    wanted = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
              "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0,
              "f32": gguf.GGMLQuantizationType.F32}[gguf_type]
    tied = bool(config.get("tie_word_embeddings"))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights")
    counts: dict[str, int] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                if tied and key == "lm_head.weight":
                    continue  # llama.cpp reads a missing output.weight as tied to token_embd
                target = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise UserError(f"{path}: tensor {key} has no GGUF name for architecture {arch}")
                data = _llama_rows(fh.get_tensor(key).float(), key, config) if arch == "llama" else \
                    fh.get_tensor(key).float()
                if arch == "gemma2" and key.endswith("norm.weight"):
                    data = data + 1  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by the stored w
                array = data.numpy().astype(np.float32)
                qtype = wanted if array.ndim > 1 and not target.endswith("_norm.weight") else \
                    gguf.GGMLQuantizationType.F32
                try:
                    packed = gguf.quants.quantize(array, qtype)
                except gguf.QuantError:  # Q8_0 needs rows of a multiple of 32 values; llama.cpp falls back too
                    qtype = gguf.GGMLQuantizationType.F16
                    packed = gguf.quants.quantize(array, qtype)
                writer.add_tensor(target, packed, raw_dtype=qtype)
                counts[qtype.name] = counts.get(qtype.name, 0) + 1
    return counts


def _llama_rows(weight, key: str, config: dict):
    """llama.cpp's `llama` graph applies rotary embeddings to interleaved pairs, HF's to the two halves of each
    head: its converter reorders the rows of the Q and K projections per head (and transformers' GGUF loader
    reverses exactly this)."""
    heads = int(config["num_attention_heads"])
    if key.endswith(("q_proj.weight", "q_proj.bias")):
        n = heads
    elif key.endswith(("k_proj.weight", "k_proj.bias")):
        n = int(config.get("num_key_value_heads") or heads)
    else:
        return weight
    shape = weight.shape
    return weight.reshape(n, 2, shape[0] // n // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _gguf_vocab(model_dir: Path, rows: int) -> dict:
    """The tokenizer as GGUF token list, types, scores (SentencePiece) or merges (byte-level), padded to `rows`."""
    import json

    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    kind = bpe_kind(spec, str(path))
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if max(by_id) >= rows:
        raise UserError(f"{path}: token id {max(by_id)} but the model has {rows} embedding rows")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(rows)]
    unk = spec["model"].get("unk_token") or _config_token(model_dir, "unk_token")
    types = [_token_type(i, by_id, added, spec, kind, unk) for i in range(rows)]
    if kind == "sentencepiece":
        check_sentencepiece_form(spec, path, {i: t for i, t in by_id.items() if i not in added})
        return {"model": "llama", "pre": "default", "tokens": tokens, "types": types, "merges": None,
                "scores": _merge_scores(tokens, merges), "space_prefix": _space_prefix(spec)}
    return {"model": "gpt2", "pre": gguf_pre_name(spec, path), "tokens": tokens, "types": types, "merges": merges,
            "scores": None, "space_prefix": False}


def check_sentencepiece_form(spec: dict, path: Path, vocab: dict[int, str]) -> None:
    """llama.cpp tokenizes a SentencePiece-style vocabulary as SentencePiece does: "▁" before the text, spaces
    to "▁", then it joins the adjacent pair whose concatenation is a token of highest score. tokenizer.json has
    that form when its normalizer does no more than that, and when every token that two tokens concatenate to
    is made by a merge (llama.cpp would join such a pair even where no merge lists it)."""
    steps = _steps(spec.get("normalizer"), "normalizers")
    allowed = [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]
    extra = [s.get("type", "?") + (f" {s.get('pattern')}" if "pattern" in s else "") for s in steps
             if s not in allowed]
    extra += [s.get("type", "?") for s in _steps(spec.get("pre_tokenizer")) if s.get("type") != "Metaspace"]
    if extra:
        raise UserError(f"{path}: normalizer/pre-tokenizer step {extra[0]} has no llama.cpp form (its SentencePiece "
                        "tokenizer only puts '▁' before the text and turns spaces into '▁'); cannot write GGUF")
    made = {"".join(m.split(" ", 1)) if isinstance(m, str) else "".join(m) for m in spec["model"]["merges"]}
    tokens = set(vocab.values())
    loose = [t for t in tokens if t not in made and len(t) > 1
             and any(t[:i] in tokens and t[i:] in tokens for i in range(1, len(t)))]
    if loose:
        raise UserError(f"{path}: {len(loose)} tokens (e.g. {sorted(loose)[0]!r}) join from two tokens but no merge "
                        "makes them; llama.cpp would make them, so it cannot tokenize like this file; cannot "
                        "write GGUF")


def _config_token(model_dir: Path, key: str) -> str | None:
    import json

    path = model_dir / "tokenizer_config.json"
    value = json.loads(path.read_text(encoding="utf-8")).get(key) if path.is_file() else None
    return value.get("content") if isinstance(value, dict) else value


def _token_type(i: int, by_id: dict, added: dict, spec: dict, kind: str, unk: str | None) -> int:
    """llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused (padding), 6 byte."""
    if i not in by_id:
        return 5
    token = by_id[i]
    if kind == "sentencepiece" and token == unk:  # byte-level files mark their unk token control, as the converter
        return 2
    if i in added:
        return 3 if added[i].get("special") else 4
    if kind == "sentencepiece" and spec["model"].get("byte_fallback") and len(token) == 6 \
            and token.startswith("<0x") and token.endswith(">"):
        return 6
    return 1


def _merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece scores that make llama.cpp merge in the order of tokenizer.json: llama.cpp (like
    SentencePiece) joins the adjacent pair whose result scores highest, so each token scores minus the rank of
    the first merge producing it. Tokens no merge produces (characters, bytes, specials) score below all."""
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        left, right = merge.split(" ", 1)
        rank.setdefault(left + right, r)
    floor = -float(len(merges) + 1)
    return [-float(rank[t]) if t in rank else floor for t in tokens]


def _space_prefix(spec: dict) -> bool:
    """Whether the tokenizer puts "▁" before the first word (a Prepend normalizer or a Metaspace prepend)."""
    import json

    if '"Prepend"' in json.dumps(spec.get("normalizer")):
        return True
    return any(p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never"
               for p in _steps(spec.get("pre_tokenizer")))


def _steps(step: dict | None, key: str = "pretokenizers") -> list[dict]:
    """The steps of a normalizer (key "normalizers") or pre-tokenizer, a Sequence or a single one."""
    if not step:
        return []
    return step.get(key, []) if step.get("type") == "Sequence" else [step]


def gguf_pre_name(spec: dict, path: Path) -> str:
    """llama.cpp's name for a byte-level tokenizer's pre-tokenizer, recognised by its rules."""
    from langgraft.tokenizer.bases import LLAMA3_PATTERN

    steps = _steps(spec.get("pre_tokenizer"))
    shape = [(s.get("type"), s.get("use_regex"), s.get("individual_digits"),
              (s.get("pattern") or {}).get("Regex")) for s in steps]
    known = {
        "gpt-2": [("ByteLevel", True, None, None)],
        "smollm": [("Digits", None, True, None), ("ByteLevel", True, None, None)],
        "llama-bpe": [("Split", None, None, LLAMA3_PATTERN), ("ByteLevel", False, None, None)],
        "qwen2": [("Split", None, None, _QWEN2_SPLIT), ("ByteLevel", False, None, None)],
    }
    for name, rules in known.items():
        if shape == rules:
            return name
    kinds = "+".join(s.get("type", "?") for s in steps) or "none"
    raise UserError(f"{path}: byte-level pre-tokenizer ({kinds}) matches none llama.cpp knows here "
                    f"({', '.join(known)})")


def _write_vocab(writer, vocab: dict, model_dir: Path) -> None:
    """Tokens, then special ids, add-BOS/EOS and the chat template as llama.cpp's converter reads them
    (gguf.SpecialVocab), with add-BOS/EOS taken from what the tokenizer really does."""
    gguf = gguf_module("writing")
    writer.add_tokenizer_model(vocab["model"])
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    if vocab["scores"] is not None:
        writer.add_token_scores(vocab["scores"])
        writer.add_add_space_prefix(vocab["space_prefix"])
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(vocab["tokens"]))
    special.merges = vocab["merges"] or []
    special.add_special_token.update(_adds_specials(model_dir))
    special.add_to_gguf(writer, quiet=True)


def _adds_specials(model_dir: Path) -> dict[str, bool]:
    """Whether encoding a text adds BOS / EOS, asked of the tokenizer itself."""
    from langgraft import safeload

    tok = safeload.tokenizer(model_dir)
    plain = tok("a b", add_special_tokens=False)["input_ids"]
    full = tok("a b")["input_ids"]
    bos, eos = tok.bos_token_id, tok.eos_token_id
    return {"bos": bool(bos is not None and full[:1] == [bos] and plain[:1] != [bos]),
            "eos": bool(eos is not None and full[-1:] == [eos] and plain[-1:] != [eos])}
