"""Load any supported base tokenizer as an HF fast tokenizer, remembering what kind of BPE it is.

Supported bases:
- a bare SentencePiece `tokenizer.model` (Llama-2, Mistral) — converted by transformers' own converter, the same
  code path `AutoTokenizer` uses, so our "base" is exactly what users of the HF model get;
- a bare tiktoken `tokenizer.model` (Llama-3: 128,000 ranks; its 256 special tokens and chat format are defined in
  Meta's code, reproduced here);
- an HF tokenizer directory (`tokenizer.json` or `vocab.json`+`merges.txt`, e.g. Mistral, Qwen2, GPT-2).

Only BPE models are supported: SentencePiece-style BPE (Metaspace, byte fallback) and byte-level BPE.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langgraft.errors import UserError

Kind = Literal["sentencepiece", "bytelevel"]

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
# Meta's llama3 tokenizer.py: 11 named specials, then reserved ones up to 256 in all (ids 128000-128255).
LLAMA3_NAMED = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>",
]
LLAMA3_SPECIALS = LLAMA3_NAMED + [f"<|reserved_special_token_{i}|>" for i in range(2, 2 + 256 - len(LLAMA3_NAMED))]
# Meta's ChatFormat (llama3 repo): header ids around the role, two newlines, content, <|eot_id|>.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ \d+$")


@dataclass
class Base:
    """A base tokenizer: the transformers object (for configs/saving) and what we need to extend it."""

    hf: Any  # transformers tokenizer (fast); save_pretrained() writes its config and chat template
    kind: Kind
    source: str
    sp_proto: Any = None  # sentencepiece ModelProto, for SentencePiece bases (we also write an extended .model)

    @property
    def backend(self):
        return self.hf.backend_tokenizer


def load_base(path: str | Path) -> Base:
    """Load a base tokenizer from a file or directory; raise UserError for anything unsupported."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--base {path}: not found")
    if path.is_file():
        return _load_file(path)
    if (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file():
        base = _load_hf_dir(path)
    elif (path / "tokenizer.model").is_file():
        return _load_file(path / "tokenizer.model")
    else:
        raise UserError(f"--base {path}: no tokenizer.json, vocab.json+merges.txt or tokenizer.model inside")
    for name in ("tokenizer.model", "tokenizer.model.v3"):
        if base.kind == "sentencepiece" and (path / name).is_file():
            base.sp_proto = read_sp_proto(path / name)
            break
    return base


def _load_file(path: Path) -> Base:
    stat = path.stat()
    return _load_file_cached(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_file_cached(path: Path, _mtime_ns: int, _size: int) -> Base:
    """Converting a 32k SentencePiece model takes seconds; `extend`, `report` and a pipeline's later stages load
    the same base file again in one process. Keyed on modification time and size, so an edited file reloads.
    Callers read the Base, never modify it."""
    head = path.read_bytes()[:200].split(b"\n", 1)[0].strip()
    if _TIKTOKEN_LINE.match(head):
        return _load_tiktoken(path)
    proto = read_sp_proto(path)
    if proto.trainer_spec.model_type != 2:  # 1 = unigram, 2 = BPE, 3 = word, 4 = char
        raise UserError(f"--base {path}: SentencePiece model type {proto.trainer_spec.model_type} unsupported "
                        "(only BPE bases can be extended with merges)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(path.read_bytes())
        # The settings of Meta's HF Llama-2 tokenizer_config.json: BOS added, EOS not.
        settings = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(settings))
        hf = _auto(tmp, path)
    return Base(hf=_like_sentencepiece(hf, proto), kind="sentencepiece", source=str(path), sp_proto=proto)


def _like_sentencepiece(hf, proto):
    """transformers' conversion of a SentencePiece BPE model, changed where it tokenizes unlike SentencePiece.

    - Merges are ranked by id, not by score: Llama-2's whitespace-only pieces have low ids but the lowest score
      (-1e9), so the conversion merges runs of spaces first ("▁▁▁▁▁▁▁▁▁▁" + "|" where SentencePiece gives
      "▁▁▁▁▁▁▁▁▁" + "▁|"). `sp_merges` ranks them as SentencePiece does.
    - Its Metaspace pre-tokenizer adds no "▁" to text that already starts with a space; SentencePiece always adds
      its dummy prefix ("    def" → "▁▁▁▁" + "▁def"). A Prepend normalizer always adds it, as Meta's own HF
      Llama-2 tokenizer.json does (so, like it, also after a special token in the text).
    - It makes user-defined pieces added tokens, which cut the text before normalizing: each part then gets its
      own "▁" ("۲۰ دلار" → "۲", "۰", "▁", "▁دلار" where SentencePiece gives "▁", "۲", "۰", "▁دلار"). A
      single-character user-defined piece (`tokenizer train` makes each non-ASCII digit one) is atomic in BPE
      anyway when no merge names it, so it stays a plain vocabulary entry, and `sp_merges` names none.
    - Its normalizer keeps runs of spaces that SentencePiece collapses when `remove_extra_whitespaces` is set
      (`_sp_normalizer`).
    Returns a generic fast tokenizer: model-specific classes rebuild this pipeline on load in transformers 5.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(hf.backend_tokenizer.to_str())
    spec["model"]["merges"] = [list(m) for m in sp_merges(proto)]
    spec["normalizer"] = _sp_normalizer(proto.normalizer_spec)
    spec["pre_tokenizer"] = None
    singles = {p.piece for p in proto.pieces if p.type == 4 and len(p.piece) == 1}  # 4 = USER_DEFINED
    for token in spec["added_tokens"]:
        if token["content"] in singles and not token["special"]:
            spec["model"]["vocab"][token["content"]] = token["id"]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["special"] or t["content"] not in singles]
    backend = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=hf.bos_token, eos_token=hf.eos_token, unk_token=hf.unk_token,
        chat_template=hf.chat_template, clean_up_tokenization_spaces=False,
    )


def _sp_normalizer(spec) -> dict:
    """SentencePiece's whitespace handling as a tokenizers normalizer: with `remove_extra_whitespaces` (its
    default, off in Llama-2 and in `tokenizer train` models) it trims spaces and collapses runs of them; with
    `add_dummy_prefix` it puts "▁" before the text; then spaces become "▁"."""
    steps = [{"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]
    if spec.add_dummy_prefix:
        steps.insert(0, {"type": "Prepend", "prepend": "▁"})
    if spec.remove_extra_whitespaces:
        steps[:0] = [{"type": "Replace", "pattern": {"Regex": "^ +| +$"}, "content": ""},
                     {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
    return {"type": "Sequence", "normalizers": steps}


def sp_merges(proto) -> list[tuple[str, str]]:
    """A SentencePiece BPE model's merges in the order SentencePiece applies them, as HF BPE ranks.

    SentencePiece merges the adjacent pair whose result has the highest score, the leftmost on ties. Ranking every
    split of every piece by the result's score reproduces that wherever scores differ. Equal scores (Llama-2's
    whitespace-only pieces all score -1e9) tie-break on the longer left half first: a run of spaces then grows
    from its left end, "▁▁" → "▁▁▁" → …, as SentencePiece's leftmost rule does, instead of pairing up everywhere.
    """
    pieces = {p.piece: (i, p.score) for i, p in enumerate(proto.pieces) if p.type == 1}  # NORMAL pieces merge
    ranked = []
    for piece, (index, score) in pieces.items():
        for cut in range(1, len(piece)):
            if piece[:cut] in pieces and piece[cut:] in pieces:
                ranked.append((-score, -cut, index, piece[:cut], piece[cut:]))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _load_tiktoken(path: Path) -> Base:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    try:
        backend = TikTokenConverter(
            vocab_file=str(path), pattern=LLAMA3_PATTERN, extra_special_tokens=LLAMA3_SPECIALS
        ).converted()
    except Exception as exc:  # tiktoken/base64 parse errors carry no file name
        raise UserError(f"--base {path}: not a readable tiktoken file ({exc})") from None
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|end_of_text|>", chat_template=LLAMA3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    return Base(hf=hf, kind="bytelevel", source=str(path))


def _load_hf_dir(path: Path) -> Base:
    hf = _auto(str(path), path)
    spec = json.loads(hf.backend_tokenizer.to_str())
    return Base(hf=hf, kind=bpe_kind(spec, f"--base {path}"), source=str(path))


def bpe_kind(spec: dict, where: str) -> Kind:
    """Classify a tokenizer.json as SentencePiece-style or byte-level BPE; anything else is a UserError whose line
    starts with `where` (the flag and path, or the file, it came from)."""
    if spec["model"]["type"] != "BPE":
        raise UserError(f"{where}: {spec['model']['type']} tokenizers are unsupported (BPE only)")
    blob = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    if "ByteLevel" in blob:
        return "bytelevel"
    if "Metaspace" in blob or "▁" in json.dumps(spec.get("normalizer"), ensure_ascii=False):
        return "sentencepiece"
    raise UserError(f"{where}: BPE without Metaspace or ByteLevel handling is unsupported")


def _auto(directory: str, shown: Path):
    from langgraft import safeload

    safeload.check_no_code(directory, "--base")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = safeload.tokenizer(directory, "--base")
    except Exception as exc:
        raise UserError(f"--base {shown}: cannot load tokenizer ({type(exc).__name__}: {exc})") from None
    if not getattr(hf, "is_fast", False) or getattr(hf, "backend_tokenizer", None) is None:
        raise UserError(f"--base {shown}: no fast (tokenizers) backend could be built")
    return hf


def read_sp_proto(path: str | Path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception:
        raise UserError(f"{path}: not a SentencePiece model (and not a tiktoken file)") from None
    if not proto.pieces:
        raise UserError(f"{path}: not a SentencePiece model (no pieces)")
    return proto
