"""Reading (`langgraft import-gguf`): `gguf_info` checks a file before transformers spends time on it (magic bytes,
a header and tensor table that parse, tensor data inside the file, an architecture name); `import_gguf` turns it
into a plain HF model folder — float safetensors, config, fast tokenizer with the chat template, generation
config — that every other verb takes as `--model`. Whether transformers can read the architecture is its own
decision (its config loader says so in one line, before any weight is read). transformers de-quantises GGUF
weights on load but refuses to `save_pretrained` a model it loaded that way, so the weights are copied into a
fresh model built from the same config without its `quantization_config`; tied embeddings stay tied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from langgraft.errors import UserError
from langgraft.ggufio import gguf_module
from langgraft.rundir import StageResult

GGUF_MAGIC = b"GGUF"
IMPORT_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ImportOptions:
    """What `import-gguf` may be told beyond its file and output: the source of its flags."""

    # weight dtype of the saved model (default float32: the de-quantised values exactly)
    dtype: Literal[IMPORT_DTYPES] = "float32"
# The gguf package builds a Python object for every array element and string it reads, so a small file that
# claims a huge count costs gigabytes. Counts are checked against the bytes left in the file, and against these
# limits (a 256k-token vocabulary with its merges is about 1.1M elements), before anything reads the file.
MAX_ELEMENTS = 4_000_000
MAX_TENSORS = 100_000
MAX_DIMS = 4
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> size
_STRING, _ARRAY = 8, 9


def gguf_info(path: str | Path) -> dict:
    """Architecture, name, tensor count and tensor types of a GGUF file; one UserError line for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    reader = open_gguf(path)
    size = path.stat().st_size
    arch = _string_field(reader, "general.architecture")
    if not arch:
        raise UserError(f"{path}: GGUF without general.architecture; not a model file")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    return {"architecture": arch, "name": _string_field(reader, "general.name"), "tensors": len(reader.tensors),
            "tensor_types": types, "bytes": size, "pre_tokenizer": _string_field(reader, "tokenizer.ggml.pre")}


def open_gguf(path: str | Path):
    """The gguf package's reader of a file whose header was checked first (`check_layout`); one UserError line
    for a bad file. Every GGUF langgraft reads, itself or through transformers, is opened here first."""
    path = Path(path)
    gguf = gguf_module()
    check_layout(path)
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError, OverflowError, UnicodeDecodeError) as exc:
        # the header or the tensor table runs past the end of the file, or is not what it claims
        raise UserError(f"{path}: truncated or corrupt GGUF ({type(exc).__name__}: {exc})") from None


class _Cursor:
    """Reads the GGUF header with every length checked against the bytes left in the file."""

    def __init__(self, path: Path, data: bytes, order: str):
        self.path, self.data, self.pos, self.order, self.elements = path, data, 0, order, 0

    def bad(self, what: str) -> UserError:
        return UserError(f"{self.path}: truncated or corrupt GGUF: {what} at byte {self.pos:,} (the file has "
                         f"{len(self.data):,} bytes)")

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.bad(f"{what} of {n:,} bytes runs past the end")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), self.order)

    def count(self, n: int, each: int, what: str) -> None:
        """`n` more elements of at least `each` bytes: within the file and within MAX_ELEMENTS."""
        self.elements += n
        if n * each > len(self.data) - self.pos:
            raise self.bad(f"{what} claims {n:,} elements, more than the file holds")
        if self.elements > MAX_ELEMENTS:
            raise self.bad(f"{what} brings the header to more than {MAX_ELEMENTS:,} elements")

    def string(self, what: str) -> bytes:
        return self.take(self.uint(8, f"{what} length"), what)

    def value(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in _SCALAR_BYTES:
            self.take(_SCALAR_BYTES[vtype], what)
        elif vtype == _STRING:
            self.string(what)
        elif vtype == _ARRAY and depth < 2:
            itype, n = self.uint(4, f"{what} item type"), self.uint(8, f"{what} length")
            if itype in _SCALAR_BYTES:
                self.count(n, _SCALAR_BYTES[itype], what)
                self.take(n * _SCALAR_BYTES[itype], what)
                return
            self.count(n, 8 if itype == _STRING else 12, what)
            for _ in range(n):
                self.value(itype, what, depth + 1)
        else:
            raise self.bad(f"{what} has an unknown value type {vtype}")


def check_layout(path: Path) -> None:
    """Walk the header (metadata and tensor table) without building anything: every declared count and length
    must fit in the bytes left, the element total under MAX_ELEMENTS, and every tensor's data inside the file."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    data = path.read_bytes() if path.stat().st_size < (1 << 20) else _header_bytes(path)
    size = path.stat().st_size
    version = int.from_bytes(data[4:8], "little") if len(data) >= 8 else 0
    order = "little" if version & 0xFFFF else "big"  # a big-endian file's version reads byte-swapped
    cur = _Cursor(path, data, order)
    cur.take(4, "magic")
    if cur.uint(4, "version") not in (2, 3):
        raise cur.bad("unsupported GGUF version")
    n_tensors, n_kv = cur.uint(8, "tensor count"), cur.uint(8, "metadata count")
    if n_tensors > MAX_TENSORS:
        raise cur.bad(f"{n_tensors:,} tensors (more than {MAX_TENSORS:,})")
    cur.count(n_kv, 12, "metadata table")
    alignment = 32
    for _ in range(n_kv):
        key = cur.string("metadata key").decode("utf-8", errors="replace")
        vtype = cur.uint(4, f"type of {key}")
        start = cur.pos
        cur.value(vtype, key)
        if key == "general.alignment" and vtype == 4:
            alignment = int.from_bytes(data[start:start + 4], order) or 32
    cur.count(n_tensors, 24, "tensor table")
    tensors = []
    for _ in range(n_tensors):
        name = cur.string("tensor name").decode("utf-8", errors="replace")
        n_dims = cur.uint(4, f"dimension count of tensor {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.bad(f"tensor {name} has {n_dims} dimensions")
        dims = [cur.uint(8, f"dimensions of tensor {name}") for _ in range(n_dims)]
        qtype, offset = cur.uint(4, f"type of tensor {name}"), cur.uint(8, f"offset of tensor {name}")
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        except (ValueError, KeyError):
            raise cur.bad(f"tensor {name} has an unknown type {qtype}") from None
        elements = 1
        for d in dims:
            elements *= d
        tensors.append((name, offset, elements * type_size // block))
    base = -(-cur.pos // alignment) * alignment
    for name, offset, nbytes in tensors:
        if base + offset + nbytes > size:
            raise UserError(f"{path}: truncated GGUF: tensor {name} ends at byte {base + offset + nbytes:,} but "
                            f"the file has {size:,} bytes")


def _header_bytes(path: Path) -> bytes:
    """The file as a memory map (read lazily): the header walk touches only its first pages."""
    import mmap

    with path.open("rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def import_gguf(path: str | Path, out: str | Path, *, dtype: str = "float32") -> StageResult:
    """Write an HF model folder at `out` from the GGUF file at `path`.

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
    return result


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
