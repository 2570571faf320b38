"""Reading (`langgraft import-gguf`): `gguf_info` checks a file before transformers spends time on it (magic bytes,
a header and tensor table that parse, tensor data inside the file, an architecture name); `import_gguf` turns it
into a plain HF model folder — float safetensors, config, fast tokenizer with the chat template, generation
config — that every other verb takes as `--model`. Whether transformers can read the architecture is its own
decision (its config loader says so in one line, before any weight is read). transformers de-quantises GGUF
weights on load but refuses to `save_pretrained` a model it loaded that way, so the weights are copied into a
fresh model built from the same config without its `quantization_config`; tied embeddings stay tied.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.ggufio import gguf_module

GGUF_MAGIC = b"GGUF"
IMPORT_DTYPES = ("float32", "bfloat16", "float16")


def gguf_info(path: str | Path) -> dict:
    """Architecture, name, tensor count and tensor types of a GGUF file; one UserError line for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    gguf = gguf_module()
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError, OverflowError, UnicodeDecodeError) as exc:
        # the header or the tensor table runs past the end of the file, or is not what it claims
        raise UserError(f"{path}: truncated or corrupt GGUF ({type(exc).__name__}: {exc})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise UserError(f"{path}: truncated GGUF: tensor {t.name} ends at byte {end:,} but the file has "
                            f"{size:,} bytes")
    arch = _string_field(reader, "general.architecture")
    if not arch:
        raise UserError(f"{path}: GGUF without general.architecture; not a model file")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    return {"architecture": arch, "name": _string_field(reader, "general.name"), "tensors": len(reader.tensors),
            "tensor_types": types, "bytes": size, "pre_tokenizer": _string_field(reader, "tokenizer.ggml.pre")}


def import_gguf(path: str | Path, out: str | Path, *, dtype: str = "float32") -> dict:
    """Write an HF model folder at `out` from the GGUF file at `path`; returns the manifest.

    `out` must not exist; it appears only when complete (built in a temporary sibling, then renamed)."""
    from langgraft.rundir import run_stage

    path, out = Path(path), Path(out)
    if dtype not in IMPORT_DTYPES:
        raise UserError(f"--dtype {dtype}: choose from {', '.join(IMPORT_DTYPES)}")
    if out.exists() or out.is_symlink():
        raise UserError(f"--out {out}: exists; choose a new folder (import-gguf never overwrites)")
    info = gguf_info(path)
    result = run_stage(out, stage="import-gguf", config={"gguf": str(path.resolve()), "dtype": dtype},
                       inputs=[path], work=lambda tmp: _convert(path, tmp, dtype, info))
    return result.manifest


def _convert(path: Path, tmp: Path, dtype: str, info: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from langgraft import safeload

    torch_dtype = getattr(torch, dtype)
    where, gguf = str(path.parent), {"gguf_file": path.name}
    try:
        config = safeload.config(where, "--gguf", **gguf)  # metadata only: an unreadable architecture fails fast
        tokenizer = safeload.tokenizer(where, "--gguf", **gguf)
        loaded = safeload.causal_lm(where, "--gguf", **gguf, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: transformers cannot read this {info['architecture']} GGUF ({first})") from None
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain floats
    config.dtype = torch_dtype
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=False)
    state = loaded.state_dict()
    del loaded
    # strict: every weight of the fresh model must come from the file (a tied head shares the embedding)
    model.load_state_dict({k: v.to(torch_dtype) for k, v in state.items()}, strict=True)
    model.tie_weights()
    model.save_pretrained(tmp)
    _restore_pre_tokenizer(tokenizer, info["pre_tokenizer"])
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    tokenizer.save_pretrained(tmp)
    GenerationConfig.from_model_config(config).save_pretrained(tmp)
    return {**info, "dtype": dtype, "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in
                                                                                 model.parameters()),
            "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
            "chat_template": bool(tokenizer.chat_template)}


def _restore_pre_tokenizer(tokenizer, pre: str) -> None:
    """Put back the rule transformers' GGUF reader drops: for llama.cpp's `smollm` (SmolLM/SmolLM2) it builds
    GPT-2's byte-level split without splitting digits apart, while the model was trained with every digit a
    pre-token of its own. (SmolLM2's own merges hold no digit pairs, so its ids rarely change; a vocabulary
    extended later, and the GGUF `export --gguf` writes from it, must carry the real rule.)"""
    if pre != "smollm" or not getattr(tokenizer, "is_fast", False):
        return
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])


def _string_field(reader, key: str) -> str:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return ""
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
