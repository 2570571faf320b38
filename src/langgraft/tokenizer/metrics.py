"""Tokenizer metrics: fertility, characters/bytes per token, byte-fallback and unknown rates, unchanged check.

Everything is measured on an HF `tokenizers.Tokenizer` (the fast backend every langgraft output and every
supported base converts to), encoding each line without special tokens. Counting is hand-written because it is
a handful of sums over `encode_batch` output; no library reports these numbers for arbitrary tokenizers.

Definitions (per text, summed over its lines):
- fertility: tokens per whitespace-separated word (`len(line.split())`);
- chars_per_token / bytes_per_token: characters / UTF-8 bytes of the lines (newlines excluded) per token;
- byte_fallback_rate: share of tokens that are byte pieces — `<0xNN>` pieces for SentencePiece-style models
  with byte fallback, or, for byte-level BPE, tokens whose bytes are not complete UTF-8 on their own (a
  character split across tokens);
- unknown_rate: share of tokens equal to the model's unknown token (0 where the model has none).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from langgraft import textfiles
from langgraft.errors import UserError

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_BATCH = 4096


def load_tokenizer(path: str | Path):
    """Load any supported tokenizer as a `tokenizers.Tokenizer`.

    An HF tokenizer dir (`tokenizer.json` or `tokenizer_config.json`) goes through `AutoTokenizer`, which is
    what users of a langgraft output get; every other base format (bare SentencePiece or tiktoken
    `tokenizer.model`, `vocab.json`+`merges.txt` dir) is converted by `langgraft.tokenizer.bases.load_base`.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer not found: {path}")
    if path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        from langgraft import safeload

        safeload.check_no_code(path, "tokenizer")
        try:
            hf = safeload.tokenizer(path, "tokenizer")
        except Exception as exc:  # transformers raises many types for a broken dir; the user needs one line
            raise UserError(f"tokenizer {path}: cannot load with AutoTokenizer ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise UserError(f"tokenizer {path}: AutoTokenizer returned a slow tokenizer ({type(hf).__name__})")
        return backend
    from langgraft.tokenizer.bases import load_base

    return load_base(path).backend


def token_table(tok) -> dict:
    """Per-id flags for the rate metrics: `byte_piece` (bool array over ids), `unk_id`, `kind`."""
    return _token_table_cached(tok.to_str())


@lru_cache(maxsize=16)
def _token_table_cached(serialized: str) -> dict:
    spec = json.loads(serialized)
    model = spec["model"]
    vocab = _id_to_token(spec)
    size = max(vocab) + 1 if vocab else 0
    byte_piece = np.zeros(size, dtype=bool)
    if _uses_byte_level(spec):
        kind = "byte-level"
        decode = _byte_decoder()
        for idx, token in vocab.items():
            if not all(c in decode for c in token):
                continue  # an added token outside the byte alphabet (e.g. <|endoftext|>) is whole text
            try:
                bytes(decode[c] for c in token).decode("utf-8")
            except UnicodeDecodeError:
                byte_piece[idx] = True
    elif model.get("byte_fallback"):
        kind = "byte-fallback"
        for idx, token in vocab.items():
            byte_piece[idx] = bool(_BYTE_PIECE.match(token))
    else:
        kind = "plain"
    unk = model.get("unk_token")
    if isinstance(unk, int):  # Unigram stores the unknown token by id
        unk_id = unk
    else:
        unk_id = next((i for i, t in vocab.items() if t == unk), None) if unk else None
    return {"byte_piece": byte_piece, "unk_id": unk_id, "kind": kind, "vocab_size": size}


def _id_to_token(spec: dict) -> dict[int, str]:
    model = spec["model"]
    vocab = model.get("vocab", {})
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        table = {i: piece for i, (piece, _score) in enumerate(vocab)}
    else:
        table = {i: t for t, i in vocab.items()}
    for added in spec.get("added_tokens", []):
        table[added["id"]] = added["content"]
    return table


def _uses_byte_level(spec: dict) -> bool:
    def has(node) -> bool:
        if not node:
            return False
        if node.get("type") == "ByteLevel":
            return True
        return any(has(child) for child in node.get("pretokenizers", []) + node.get("decoders", []))

    return has(spec.get("pre_tokenizer")) or has(spec.get("decoder"))


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes→printable-unicode table that byte-level BPE vocabularies are written in."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {ch: b for b, ch in bytes_to_unicode().items()}


def read_lines(path: str | Path, *, field: str = "text", split: str = "validation") -> list[str]:
    """Non-empty lines of a .txt file, the `field` of each line of a .jsonl file, or the non-empty texts of a
    `data prepare` dataset (`DIR:SPLIT`; plain `DIR` reads `split`, by default the held-out validation split)."""
    from langgraft.data.load import iter_texts, prepared_split

    prepared = prepared_split(path, split)
    if prepared is not None:
        texts = [text for text in iter_texts(*prepared) if text and text.strip()]
        if not texts:
            raise UserError(f"{path}: split {prepared[1]!r} holds no text")
        return texts
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text file not found: {path}")
    lines = [line for line in textfiles.iter_texts(path, field=field) if line.strip()]
    if not lines:
        raise UserError(f"text file is empty: {path}")
    return lines


def encode_lines(tok, lines: Sequence[str]) -> list[list[int]]:
    """Ids of every line, without special tokens, batched so memory stays flat on big texts."""
    ids: list[list[int]] = []
    for start in range(0, len(lines), _BATCH):
        batch = tok.encode_batch(list(lines[start:start + _BATCH]), add_special_tokens=False)
        ids.extend(enc.ids for enc in batch)
    return ids


def measure(tok, lines: Sequence[str]) -> dict:
    """Fertility, chars/bytes per token, byte-fallback and unknown rates of `tok` on `lines` (see module doc)."""
    table = token_table(tok)
    words = sum(len(line.split()) for line in lines)
    chars = sum(len(line) for line in lines)
    nbytes = sum(len(line.encode("utf-8")) for line in lines)
    flat = np.fromiter((i for ids in encode_lines(tok, lines) for i in ids), dtype=np.int64)
    tokens = int(flat.size)
    in_table = flat[flat < table["vocab_size"]]
    byte_pieces = int(table["byte_piece"][in_table].sum())
    unknown = int((flat == table["unk_id"]).sum()) if table["unk_id"] is not None else 0
    per = max(tokens, 1)
    return {
        "lines": len(lines), "words": words, "chars": chars, "bytes": nbytes, "tokens": tokens,
        "fertility": tokens / max(words, 1),
        "chars_per_token": chars / per,
        "bytes_per_token": nbytes / per,
        "byte_fallback_rate": byte_pieces / per,
        "unknown_rate": unknown / per,
        "kind": table["kind"],
    }


def unchanged(tok_a, tok_b, lines: Sequence[str], *, examples: int = 3) -> dict:
    """Share of lines whose ids are identical under both tokenizers, with the first differing lines."""
    ids_a, ids_b = encode_lines(tok_a, lines), encode_lines(tok_b, lines)
    differing = [i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if a != b]
    shown = [{"line": i + 1, "text": lines[i][:200], "a": ids_a[i][:40], "b": ids_b[i][:40]}
             for i in differing[:examples]]
    return {
        "lines": len(lines),
        "identical": len(lines) - len(differing),
        "fraction": (len(lines) - len(differing)) / max(len(lines), 1),
        "examples": shown,
    }


def throughput(tok, lines: Sequence[str], *, repeats: int = 3, cpu: bool = False) -> float:
    """Best-of-`repeats` encoding speed in characters per second (`encode_batch`, no special tokens).

    `cpu=True` divides by this process's CPU time instead of wall time: on a shared machine that is far less
    noisy (waiting for a core is not counted), and equal to wall time for a single-threaded encoder.
    """
    import time

    clock = time.process_time if cpu else time.perf_counter
    chars = sum(len(line) for line in lines)
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        encode_lines(tok, lines)
        best = min(best, clock() - started)
    return chars / max(best, 1e-9)
