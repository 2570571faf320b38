"""`langgraft tokenizer train`: a SentencePiece model on target-language text, normalised first.

The input (.txt: a document per line; .jsonl: one JSON object per line, text in `field`; a `data prepare` dataset
folder, `DIR` for its train split or `DIR:SPLIT`, its `text` column) is streamed record by record through the
language's normaliser into a temporary one-sentence-per-line file, so memory does not grow with the
corpus: SentencePiece itself keeps at most `max_sentences` lines (a reservoir sample, `input_sentence_size`).
Trainer settings that matter for grafting:
- `normalization_rule_name="identity"`: our normaliser already ran; SentencePiece's default `nmt_nfkc` would
  turn the Persian ZWNJ (U+200C) into a space.
- `split_digits=True`, `byte_fallback=True` (no unknown tokens: unseen characters become byte pieces),
  `character_coverage=0.9995`.
- Lines longer than `MAX_SENTENCE_BYTES` are cut at spaces instead of letting SentencePiece skip them silently.
Output (via `rundir.run_stage`, so it appears atomically): `sp.model`, `sp.vocab`, `langgraft.json`
(`lang`, `normalizer`, `model_type`, `vocab_size`), `train_report.json` (records read/used/skipped by reason,
timings), `manifest.json`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence

from langgraft import textfiles
from langgraft.config import PosInt, from_dict, to_dict
from langgraft.errors import UserError
from langgraft.formats.langgraft_json import write_langgraft_json
from langgraft.lang import Language, get_language
from langgraft.options import option, settings as settings_of
from langgraft.rundir import StageResult, run_stage, write_json

MODEL_TYPES = ("bpe", "unigram")
MAX_SENTENCE_BYTES = 8192
CHARACTER_COVERAGE = 0.9995


@dataclass
class TokenizerTrainOptions:
    """What `tokenizer train` may be told beyond its input, language and output: the CLI flags and the recipe's
    `tokenizer` section are made from these fields."""

    vocab_size: PosInt = 20000  # SentencePiece pieces (the paper: 20,000)
    model_type: Literal[MODEL_TYPES] = "bpe"  # SentencePiece algorithm (the paper: bpe)
    field: str = "text"  # jsonl field holding the text
    max_sentences: PosInt = 2_000_000  # sample at most this many lines
    threads: Optional[PosInt] = option(None, fingerprint=False)  # trainer threads (default: all cores)
    # normaliser options, e.g. digits=latin newlines=space zwnj_repair=false
    normalizer: dict[str, Any] = option(factory=dict, fingerprint=False)


def train_tokenizer(inputs: Sequence[str | Path], *, lang: str, out: str | Path,
                    opts: TokenizerTrainOptions | None = None, force: bool = False, **settings: Any) -> StageResult:
    """Train SentencePiece on normalised `inputs` into `out` (sp.model, sp.vocab, langgraft.json,
    train_report.json). `settings`: fields of `TokenizerTrainOptions`, over `opts`."""
    opts = from_dict(TokenizerTrainOptions, {**to_dict(opts or TokenizerTrainOptions()), **settings},
                     source="tokenizer train")
    language = get_language(lang, **opts.normalizer)
    sources = _check_inputs(inputs)
    threads = opts.threads or os.cpu_count() or 1
    # the normaliser as resolved (every option, defaults included), not as given
    config = {"lang": lang, **settings_of(opts), "normalizer": language.normalizer_config,
              "character_coverage": CHARACTER_COVERAGE, "max_sentence_bytes": MAX_SENTENCE_BYTES}
    if any(split for _, split in sources):  # the folder's hash is the input's; which split was read is config
        config["splits"] = {str(path): split for path, split in sources if split}

    def work(tmp: Path) -> dict:
        return _train_into(tmp, sources, language, config, threads)

    return run_stage(out, stage="tokenizer-train", config=config, inputs=[p for p, _ in sources], work=work,
                     force=force)


def _check_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str | None]]:
    """(path, None) per text file and (folder, split) per prepared dataset; bad ones are one-line errors."""
    from langgraft.data.load import prepared_split, split_files

    if not inputs:
        raise UserError("--input: no input files given")
    sources: list[tuple[Path, str | None]] = []
    for item in inputs:
        prepared = prepared_split(item, "train")
        if prepared is not None:
            if not split_files(*prepared):
                raise UserError(f"--input {item}: split {prepared[1]!r} of this dataset is empty")
            sources.append(prepared)
            continue
        path = Path(item)
        sources.append((path, None))
        if not path.exists():
            raise UserError(f"--input {path}: not found")
        if path.is_dir():
            raise UserError(f"--input {path}: a folder but not a prepared dataset (no dataset.json); give "
                            "`data prepare` output (DIR or DIR:SPLIT), .txt or .jsonl files")
        if not path.is_file():
            raise UserError(f"--input {path}: not a file")
        if path.stat().st_size == 0:
            raise UserError(f"--input {path}: empty file")
        if path.suffix.lower() == ".json":
            raise UserError(f"--input {path}: .json is not read (a whole-file JSON document); give .jsonl "
                            "(one object per line, text in --field) or .txt (a document per line)")
    return sources


def _train_into(tmp: Path, sources: list, language: Language, config: dict, threads: int) -> dict:
    corpus = tmp / "corpus.txt"  # removed before the folder is published
    started = time.perf_counter()
    try:
        stats = _write_corpus(corpus, sources, language, config["field"])
        normalize_s = time.perf_counter() - started
        _progress(f"normalised {stats['bytes_in'] / 1e6:.1f} MB into {stats['sentences']} lines "
                  f"in {normalize_s:.1f}s; training {config['model_type']} {config['vocab_size']} "
                  f"on {threads} threads")
        started = time.perf_counter()
        _run_sentencepiece(corpus, tmp / "sp", config, threads)
        train_s = time.perf_counter() - started
    finally:
        corpus.unlink(missing_ok=True)
    vocab_size = _vocab_size(tmp / "sp.model")
    write_langgraft_json(tmp, language.code, language.normalizer_config, model_type=config["model_type"],
                         vocab_size=vocab_size)
    report = {**stats, "vocab_size": vocab_size, "threads": threads,
              "normalize_seconds": round(normalize_s, 2), "train_seconds": round(train_s, 2)}
    write_json(tmp / "train_report.json", report)
    _progress(f"trained {vocab_size} pieces in {train_s:.1f}s")
    return {"vocab_size": vocab_size, "sentences": stats["sentences"], "skipped": stats["skipped"],
            "train_seconds": report["train_seconds"]}


def _write_corpus(corpus: Path, sources: list, language: Language, field: str) -> dict:
    """Stream every input through the normaliser into `corpus`; count what is skipped and why."""
    skipped: Counter[str] = Counter()
    per_file = {}
    totals = Counter()
    started = time.perf_counter()
    with corpus.open("w", encoding="utf-8") as sink:
        for path, split in sources:
            counts = Counter(bytes_in=0 if split else path.stat().st_size)
            for text in (_dataset_records(path, split, counts, skipped) if split else
                         textfiles.iter_texts(path, field=field, skipped=skipped)):
                counts["records"] += 1
                if counts["records"] % 200_000 == 0:
                    done = totals["records"] + counts["records"]
                    _progress(f"{path.name}: {counts['records']:,} records, "
                              f"{done / (time.perf_counter() - started):,.0f} records/s")
                normalized = language.normalize(text)
                if not normalized.strip():
                    skipped["empty_after_normalize"] += 1
                    continue
                counts["records_used"] += 1
                for line in _sentences(normalized):
                    sink.write(line + "\n")
                    counts["sentences"] += 1
            name = f"{path}:{split}" if split else str(path)
            if counts["sentences"] == 0:
                raise UserError(f"--input {name}: no text to train on ({counts['records']} non-blank records, "
                                f"none left after normalisation)")
            per_file[name] = dict(counts)
            totals.update(counts)
    return {"files": per_file, "records": totals["records"], "records_used": totals["records_used"],
            "sentences": totals["sentences"], "bytes_in": totals["bytes_in"], "skipped": dict(skipped)}


def _dataset_records(dataset: Path, split: str, counts: Counter, skipped: Counter) -> Iterator[str]:
    """The `text` column of a prepared dataset's split (its own cleaning already ran; blank rows are counted)."""
    from langgraft.data.load import iter_texts

    for text in iter_texts(dataset, split):
        if not text or not text.strip():
            skipped["empty_text"] += 1
            continue
        counts["bytes_in"] += len(text.encode("utf-8"))
        yield text


def _sentences(text: str) -> Iterator[str]:
    """Lines of `text`; a line longer than MAX_SENTENCE_BYTES is cut at spaces (SentencePiece would drop it)."""
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        if len(line) * 4 <= MAX_SENTENCE_BYTES or len(line.encode("utf-8")) <= MAX_SENTENCE_BYTES:
            yield line
            continue
        chunk: list[str] = []
        size = 0
        for word in line.split(" "):
            n = len(word.encode("utf-8")) + 1
            if chunk and size + n > MAX_SENTENCE_BYTES:
                yield " ".join(chunk)
                chunk, size = [], 0
            # A single word longer than the limit is cut by bytes' worth of characters.
            while n > MAX_SENTENCE_BYTES:
                yield word[: MAX_SENTENCE_BYTES // 4]
                word = word[MAX_SENTENCE_BYTES // 4:]
                n = len(word.encode("utf-8")) + 1
            chunk.append(word)
            size += n
        if chunk:
            yield " ".join(chunk)


NON_ASCII_DIGITS = [chr(c) for c in (*range(0x06F0, 0x06FA), *range(0x0660, 0x066A))]


def _run_sentencepiece(corpus: Path, prefix: Path, config: dict, threads: int) -> None:
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), vocab_size=config["vocab_size"],
            model_type=config["model_type"], normalization_rule_name="identity", split_digits=True,
            byte_fallback=True, character_coverage=config["character_coverage"],
            # SentencePiece would otherwise collapse runs of spaces and drop leading and trailing ones, so
            # decode(encode(text)) would not give indented code or aligned columns back (a base needs that)
            remove_extra_whitespaces=False,
            input_sentence_size=config["max_sentences"], shuffle_input_sentence=True,
            max_sentence_length=MAX_SENTENCE_BYTES, num_threads=threads, minloglevel=1,
            # split_digits only splits ASCII 0-9; Persian and Arabic-Indic digits are split by making each one a
            # user-defined (always atomic) piece, so numbers tokenize digit by digit in both scripts.
            user_defined_symbols=[] if config["normalizer"].get("digits") == "latin" else NON_ASCII_DIGITS,
        )
    except RuntimeError as exc:
        raise _vocab_size_error(str(exc), config["vocab_size"]) or exc from None


def _vocab_size_error(message: str, vocab_size: int) -> UserError | None:
    """SentencePiece's vocab-size failures, rephrased as one line; None for any other failure."""
    too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return UserError(f"--vocab-size {vocab_size}: too large for this corpus "
                         f"(SentencePiece can build at most {too_high.group(2)} pieces from it)")
    too_low = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        return UserError(f"--vocab-size {vocab_size}: too small; the corpus's characters plus the special and "
                         f"byte pieces need at least {too_low.group(2)}")
    if "ocabulary size" in message:
        return UserError(f"--vocab-size {vocab_size}: the corpus cannot support it ({message.splitlines()[-1]})")
    return None


def _vocab_size(model: Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(model)).get_piece_size()


def _progress(message: str) -> None:
    print(f"langgraft tokenizer train: {message}", file=sys.stderr, flush=True)
