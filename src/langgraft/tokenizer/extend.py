"""Merge a target-language SentencePiece model into a base BPE tokenizer, leaving other text untouched.

Why hand-written: no library merges vocabularies *with merges*. The usual recipe (Chinese-LLaMA-Alpaca) appends
SentencePiece pieces including digits, punctuation and Latin, which re-tokenizes English; for byte-level bases the
other tools fall back to thousands of "added tokens" (slow, and no merges at all).

How it works, on the HF `tokenizer.json` BPE model (the thing users load):
1. Only pieces made of target-script characters, ZWNJ and the word-boundary marker are admitted, and each must
   contain a target-script character or ZWNJ. Every merge we add or move therefore *produces* a token holding such
   a character, so it can never fire on text without one: that text keeps exactly the base's ids.
2. New tokens get ids after the base's last id; base ids keep their strings.
3. Merges: the base's merges that produce no target-script token keep their order; then come merges for the new
   model's pieces in its own priority order (each piece gets every split whose halves are in the vocabulary, as
   the HF converters do); then the base's remaining target-script merges. Reordering the base's target-script
   merges is what lets Persian segment like the Persian model instead of being blocked by the base's own Arabic-
   script merges, and it cannot affect text without target characters (point 1).
4. For byte-level bases (Llama-3, Qwen2, GPT-2) pieces are mapped to byte-level strings (▁ → space); a piece the
   base pre-tokenizer always cuts (these bases split words at a ZWNJ) is replaced by its pre-token parts. Merges
   split only between whole characters, and single characters come first, so Persian characters form from their
   bytes first and then merge in the Persian model's order. Byte-level merges that can only fire on target-script
   bytes (e.g. a space plus a UTF-8 lead byte of U+0600-06FF) move with the target block.
5. For SentencePiece bases an extended `tokenizer.model` is written too, with scores in the same order as the
   merges, so slow (sentencepiece) and fast tokenizers agree; the new merges rank before the base's trailing
   whitespace-only merges, as the new pieces' scores rank above those pieces' lowest scores.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from langgraft.errors import UserError
from langgraft.formats.extend_report import write_tokenizer_extend_report
from langgraft.formats.langgraft_json import read_langgraft_json, write_langgraft_json
from langgraft.formats.new_tokens import write_new_tokens
from langgraft.rundir import StageResult, run_stage, write_json
from langgraft.tokenizer.bases import Base, load_base, read_sp_proto

ZWNJ = "\u200c"
SPACE_MARK = "▁"


@functools.cache
def _continuation() -> frozenset[str]:
    """Byte-level (GPT-2 byte-to-unicode) images of UTF-8 continuation bytes 0x80-0xBF."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return frozenset(ch for b, ch in bytes_to_unicode().items() if 0x80 <= b < 0xC0)


def extend_tokenizer(base: str | Path, add: str | Path, *, lang: str, out: str | Path,
                     force: bool = False) -> StageResult:
    """Merge the pieces of SentencePiece model `add` into tokenizer `base`; write an HF tokenizer dir to `out`."""
    from langgraft.lang import get_language

    add_model, normalizer = _resolve_add(Path(add), lang)
    language = get_language(lang, **normalizer)
    config = {"base": str(base), "add": str(add), "lang": lang, "normalizer": language.normalizer_config}

    def work(tmp: Path) -> dict:
        loaded = load_base(base)
        new_proto = read_sp_proto(add_model)
        return _write_extended(loaded, new_proto, language, tmp, config)

    return run_stage(out, stage="tokenizer-extend", config=config, inputs=[base, add_model], work=work,
                     force=force)


def _resolve_add(add: Path, lang: str) -> tuple[Path, dict]:
    """`--add` may be a .model file or a `tokenizer train` output dir (whose langgraft.json names the normaliser)."""
    if add.is_dir():
        model = add / "sp.model"
        if not model.is_file():
            raise UserError(f"--add {add}: directory has no sp.model")
        meta = read_langgraft_json(add)
        if meta.get("lang") not in (None, lang):
            raise UserError(f"--add {add}: trained for language {meta['lang']!r}, not --lang {lang}")
        return model, dict(meta.get("normalizer") or {})
    if not add.is_file():
        raise UserError(f"--add {add}: not found")
    return add, {}


def _write_extended(base: Base, new_proto, language, tmp: Path, config: dict) -> dict:
    spec = json.loads(base.backend.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    base_size = max([*vocab.values(), *(t["id"] for t in spec.get("added_tokens", []))]) + 1
    for added in spec.get("added_tokens", []):
        # tokenizers re-numbers added tokens missing from the model vocab as `len(vocab) + i` on load; with new
        # ids after them that would move Llama-3's/Qwen's specials. Pinning them in the vocab keeps their ids.
        vocab.setdefault(added["content"], added["id"])
    to_model, from_model = _codec(base.kind)
    is_target = _target_test(language, base.kind, from_model)
    points = _split_points(base.kind)

    ordered, skipped, already = _select_pieces(new_proto, language, base, to_model, from_model)
    ordered = _close_under_splits(ordered, vocab, base.kind, points)
    next_id = base_size
    added: list[str] = []
    for token in ordered:
        if token not in vocab:
            vocab[token] = next_id
            added.append(token)
            next_id += 1

    flags = [is_target(a + b) for a, b in merges]
    keep = [m for m, flag in zip(merges, flags) if not flag]
    moved = [m for m, flag in zip(merges, flags) if flag]
    results = _target_results(ordered, [a + b for a, b in moved], vocab, is_target)
    target_block = target_merges(results, _mergeable(vocab, spec, base.sp_proto), points)
    seen = set(target_block)
    target_block += [m for m in moved if m not in seen]  # byte-level bases also split inside characters
    head, spaces = _split_trailing_spaces(keep) if base.kind == "sentencepiece" else (keep, [])
    spec["model"]["merges"] = [list(m) for m in head + target_block + spaces]

    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(json.dumps(spec))
    base.hf.save_pretrained(str(tmp))
    backend.save(str(tmp / "tokenizer.json"))
    _use_generic_class(tmp / "tokenizer_config.json")
    for stale in ("vocab.json", "merges.txt", "tokenizer.model"):
        (tmp / stale).unlink(missing_ok=True)
    if base.kind == "sentencepiece" and base.sp_proto is not None:
        _write_sp_model(base.sp_proto, keep, results, added, tmp / "tokenizer.model")

    new_tokens = _write_new_tokens(tmp, base, vocab, added, from_model, base_size)
    write_langgraft_json(tmp, language.code, language.normalizer_config, base=config["base"], base_kind=base.kind)
    report = {
        "base": config["base"], "base_kind": base.kind, "lang": language.code,
        "base_vocab_size": base_size, "vocab_size": next_id, "added": len(added),
        "pieces_in_new_model": len(new_proto.pieces), "already_in_base": already, "skipped": skipped,
        "new_merges": len(target_block) - len(moved), "moved_base_merges": len(moved),
        "merges": len(keep) + len(target_block),
        "identity_guarantee": "text without target-script characters and without U+200C (ZWNJ) "
                              "encodes to exactly the base ids",
        "examples": [t["text"] for t in new_tokens[:20]],
    }
    write_tokenizer_extend_report(tmp, report)
    _verify(tmp, base, next_id)
    return report


def _split_trailing_spaces(merges: list[tuple[str, str]]) -> tuple[list, list]:
    """The base's merges, less the block of whitespace-only merges at its end (Llama-2 and Mistral score those
    pieces lowest, so SentencePiece forms runs of spaces last). New pieces must rank before that block, as their
    scores in the extended tokenizer.model do, or "▁▁" + "می" would win over SentencePiece's "▁" + "▁می"."""
    cut = len(merges)
    while cut and set(merges[cut - 1][0] + merges[cut - 1][1]) == {SPACE_MARK}:
        cut -= 1
    return merges[:cut], merges[cut:]


def _write_new_tokens(tmp: Path, base: Base, vocab: dict, added: list[str], from_model, base_size: int) -> list:
    """new_tokens.json: id, vocab string, surface text and how the *base* splits it (for mean-subtokens init)."""
    tokens = [{"id": vocab[t], "token": t, "text": from_model(t),
               "base_ids": [piece.id for piece in base.backend.model.tokenize(t)]} for t in added]
    write_new_tokens(tmp, base_size, tokens)
    return tokens


def _codec(kind: str):
    """Functions mapping surface pieces (with ▁) to the model's vocab strings and vocab strings to surface text."""
    if kind == "sentencepiece":
        return (lambda piece: piece), (lambda token: token.replace(SPACE_MARK, " "))
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    enc = bytes_to_unicode()
    dec = {v: k for k, v in enc.items()}

    def to_model(piece: str) -> str:
        return "".join(enc[b] for b in piece.replace(SPACE_MARK, " ").encode("utf-8"))

    def from_model(token: str) -> str:
        return bytes(dec[c] for c in token).decode("utf-8", errors="replace")

    return to_model, from_model


def _target_test(language, kind: str, from_model):
    """True when a vocab string can only occur in text holding a target-script character or ZWNJ: it contains a
    complete such character, or (byte-level) a UTF-8 lead byte that only ever starts target-script characters."""
    exclusive: set[str] = set()
    ascii_images = {chr(c) for c in range(128)} | {SPACE_MARK}
    if kind == "bytelevel":
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        enc = bytes_to_unicode()
        ascii_images = {enc[b] for b in range(128)}
        for lead in range(0xC2, 0xE0):
            if all(language.is_target_char(chr(((lead & 0x1F) << 6) | low)) for low in range(64)):
                exclusive.add(enc[lead])

    def is_target(token: str) -> bool:
        if all(ch in ascii_images for ch in token):  # fast path: most merges are ASCII
            return False
        if exclusive and any(ch in exclusive for ch in token):
            return True
        text = from_model(token).replace("\ufffd", "")
        return any(ch == ZWNJ or language.is_target_char(ch) for ch in text)

    return is_target


def _split_points(kind: str):
    """Where a vocab string may be split by a merge. SentencePiece: anywhere. Byte-level: between whole UTF-8
    characters only (single characters split between their bytes), so Persian characters form first and then
    merge like the Persian model's pieces instead of through arbitrary partial-byte tokens."""
    if kind == "sentencepiece":
        return lambda token: range(1, len(token))
    def points(token: str) -> list[int]:
        starts = [i for i in range(1, len(token)) if token[i] not in _continuation()]
        return starts or list(range(1, len(token)))

    return points


def _select_pieces(proto, language, base: Base, to_model, from_model) -> tuple[list[str], dict, int]:
    """New model's admissible pieces, as vocab strings, in its priority order; count every skip by reason.

    A byte-level base splits text into pre-tokens before BPE (Llama-3, Qwen2 and GPT-2 split at a ZWNJ), so a piece
    such as «▁می‌شود» can never be one token there; its pre-token parts («▁می», «‌شود») take its place instead.
    """
    skipped = {"control_or_byte": 0, "not_target_script": 0, "changed_by_base_normalizer": 0,
               "split_by_base_pretokenizer": 0}
    ordered: list[str] = []
    seen: set[str] = set()
    vocab = base.backend.get_vocab()
    pieces = sorted(proto.pieces, key=lambda p: -p.score) if proto.trainer_spec.model_type == 1 else proto.pieces
    for piece in pieces:
        if piece.type not in (1, 4):  # NORMAL or USER_DEFINED; skip unknown, control and byte pieces
            skipped["control_or_byte"] += 1
            continue
        if not admissible(piece.piece, language):
            skipped["not_target_script"] += 1
            continue
        tokens = [to_model(piece.piece)]
        if base.kind == "bytelevel":
            parts = _pretokens(piece.piece, base)
            if parts is None:
                skipped["changed_by_base_normalizer"] += 1
                continue
            if parts != tokens:
                skipped["split_by_base_pretokenizer"] += 1
                surfaces = [from_model(t).replace(" ", SPACE_MARK) for t in parts]
                tokens = [t for surface, t in zip(surfaces, parts) if admissible(surface, language)]
        for token in tokens:
            if token not in seen:
                seen.add(token)
                ordered.append(token)
    return ordered, skipped, sum(t in vocab for t in ordered)


def admissible(piece: str, language) -> bool:
    """Target-script letters (plus ▁ and ZWNJ), or one target-script non-letter such as ، or ۱ (optionally after
    ▁). Multi-digit and mixed punctuation pieces are refused: digits stay split, as in the bases."""
    core = piece.replace(SPACE_MARK, "")
    if not core or SPACE_MARK in piece.lstrip(SPACE_MARK):
        return False
    if all(ch == ZWNJ or language.is_target_letter(ch) for ch in core):
        return True
    return len(core) == 1 and language.is_target_char(core)


def _pretokens(piece: str, base: Base) -> list[str] | None:
    """The base's pre-tokens for a piece (byte-level strings); None when the base normaliser would change it."""
    text = piece.replace(SPACE_MARK, " ")
    normalizer = base.backend.normalizer
    if normalizer is not None and normalizer.normalize_str(text) != text:
        return None
    pre = base.backend.pre_tokenizer
    return [part for part, _ in pre.pre_tokenize_str(text)] if pre is not None else [text]


def _close_under_splits(ordered: list[str], vocab: dict[str, int], kind: str, points) -> list[str]:
    """Make every token buildable by merges: add missing prefixes (unigram models have no merge history) and
    missing single characters; single characters come first so they form before longer pieces."""
    final = set(vocab) | set(ordered)
    out: list[str] = []
    placed: set[str] = set()

    def ensure(token: str) -> None:
        if token in placed:
            return
        cuts = list(points(token))
        if cuts and not any(token[:i] in final and token[i:] in final for i in cuts):
            for part in (token[: cuts[-1]], token[cuts[-1]:]):
                final.add(part)
                ensure(part)
        placed.add(token)
        out.append(token)

    if kind == "sentencepiece":  # characters missing from the base vocab (they would byte-fall-back otherwise)
        singles = [ch for t in ordered for ch in t if ch not in vocab]
    else:  # byte-level: tokens that are one whole character
        singles = [t for t in ordered if not any(t[i] not in _continuation() for i in range(1, len(t)))]
    for token in singles + ordered:
        if token not in final:
            final.add(token)
        ensure(token)
    return out


def _target_results(ordered: list[str], moved: list[str], vocab: dict[str, int], is_target) -> list[str]:
    """Every target-script token of the final vocabulary, in the priority order its merges get: the new model's
    pieces in its order, then the base's target-script merge results in the base's order, then the remaining
    target-script tokens by id. The last group matters: a base piece such as Llama-2's «▁ال» has no path in the base
    («▁ا» is not a base piece) but one through a new piece, and SentencePiece takes that path."""
    results = dict.fromkeys(t for t in ordered if len(t) > 1)
    results.update(dict.fromkeys(moved))
    rest = sorted((i, t) for t, i in vocab.items() if len(t) > 1 and t not in results and is_target(t))
    results.update(dict.fromkeys(t for _, t in rest))
    return list(results)


def _mergeable(vocab: dict[str, int], spec: dict, proto) -> set[str]:
    """Vocab strings a merge may join: not added/special tokens and, where a SentencePiece model exists, only its
    NORMAL pieces and the new ones (user-defined pieces such as the Persian digits are atomic there)."""
    out = set(vocab) - {t["content"] for t in spec.get("added_tokens", [])}
    if proto is not None:
        out -= {p.piece for p in proto.pieces if p.type != 1}
    return out


def target_merges(results: list[str], mergeable: set[str], points) -> list[tuple[str, str]]:
    """Merges that make a BPE model form `results` exactly as SentencePiece does: SentencePiece joins the adjacent
    pair whose concatenation scores highest, whatever the halves, so every split of each result into two
    mergeable tokens is a merge, ranked by the result (then the longer left half first, as `sp_merges` does)."""
    merges: list[tuple[str, str]] = []
    for token in results:
        cuts = sorted((i for i in points(token) if token[:i] in mergeable and token[i:] in mergeable), reverse=True)
        merges.extend((token[:i], token[i:]) for i in cuts)
    return merges


def _write_sp_model(proto, keep, results: list[str], added: list[str], path: Path) -> None:
    """Extended SentencePiece model whose score order matches the merge order of tokenizer.json: every target
    result scores below the base's other pieces, in the order of `results`."""
    proto = copy.deepcopy(proto)
    kept_results = {a + b for a, b in keep}
    # Scores are float32: stay in the range where integers are exact (Llama-2 parks whitespace pieces at -1e9).
    floor = min((p.score for p in proto.pieces if p.type == 1 and p.piece in kept_results and p.score > -1e6),
                default=0.0)
    rank = {token: r for r, token in enumerate(results)}
    index = {p.piece: p for p in proto.pieces}
    for token in added:
        piece = proto.pieces.add()
        piece.piece, piece.type, piece.score = token, 1, floor - 1 - len(rank)
        index[token] = piece
    for token, r in rank.items():
        if token in index and index[token].type == 1:
            index[token].score = floor - 1 - r
    proto.trainer_spec.vocab_size = len(proto.pieces)
    path.write_bytes(proto.SerializeToString())


def _use_generic_class(path: Path) -> None:
    """Model-specific classes (Qwen2Tokenizer, LlamaTokenizer, ...) rebuild their pipeline from vocab+merges in
    transformers 5 and re-append special tokens after the vocabulary, which would move Qwen's specials onto our
    new ids. The generic fast class loads tokenizer.json verbatim."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json(path, config)


def _verify(tmp: Path, base: Base, vocab_size: int) -> None:
    """The written directory must load as a fast tokenizer of the expected size with every base id intact."""
    from langgraft import safeload

    tok = safeload.tokenizer(tmp, "--out")
    if not tok.is_fast or len(tok) != vocab_size:
        raise RuntimeError(f"extended tokenizer reloads with {len(tok)} tokens, expected {vocab_size}")
    old = base.backend.get_vocab(with_added_tokens=True)
    new = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    moved = [t for t, i in old.items() if new.get(t) != i]
    if moved:
        raise RuntimeError(f"extended tokenizer moved {len(moved)} base tokens, e.g. {moved[:3]}")
