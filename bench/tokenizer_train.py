"""Time `train_tokenizer` (normalise + SentencePiece 20k BPE) on ~29 MB of Persian text.

Corpus (written to a temp dir outside the repo): Fars + Varzesh3 + Namnak news (title/abstract/paragraphs), the 10
Persian Quran translations, The Little Prince (Persian) and FarsTail train/val sentences. Baseline, same process,
same corpus, same threads: SentencePiece with its defaults on the raw text (`nmt_nfkc`, no digit split, no byte
fallback, every sentence) — what one gets without langgraft. Target: train + merge ≤ 180 s on 2 cores.

    python bench/tokenizer_train.py [--vocab-size 20000] [--model-type bpe]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from benchdata import DATA, FARS, NAMNAK, NEWS, VARZESH3, news_texts  # bench/ is on sys.path as a script

from langgraft.tokenizer.train import train_tokenizer


def write_corpus(path: Path) -> int:
    texts = news_texts(FARS, VARZESH3, NAMNAK)
    for quran in sorted((DATA / "parsinlu/data/translation/quran").glob("fa.*.txt")):
        texts += quran.read_text(encoding="utf-8").splitlines()
    prince = NEWS / "literature/world/The-Little Prince-Persian-dataset.txt"
    texts += [line[8:] for line in prince.read_text(encoding="utf-8").splitlines() if line.startswith("# ::snt ")]
    for name in ("Train-word.csv", "Val-word.csv"):
        with open(DATA / "farstail/data" / name, newline="", encoding="utf-8") as fh:
            texts += [row[k] for row in csv.DictReader(fh, delimiter="\t") for k in ("premise", "hypothesis")]
    lines = [" ".join(t.split()) for t in texts]
    path.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab-size", type=int, default=20000)
    parser.add_argument("--model-type", default="bpe")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "fa.txt"
        size = write_corpus(corpus)
        print(f"corpus: {size / 1e6:.1f} MB")
        start = time.perf_counter()
        result = train_tokenizer([corpus], lang="fa", vocab_size=args.vocab_size, model_type=args.model_type,
                                 out=Path(tmp) / "ours", threads=args.threads)
        ours = time.perf_counter() - start
        report = json.loads((result.path / "train_report.json").read_text())
        print(f"langgraft: {ours:.1f} s (normalise {report['normalize_seconds']} s, "
              f"SentencePiece {report['train_seconds']} s), {result['vocab_size']} pieces")
        start = time.perf_counter()
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(tmp) / "base"),
                                       vocab_size=args.vocab_size, model_type=args.model_type,
                                       num_threads=args.threads, minloglevel=1)
        theirs = time.perf_counter() - start
        print(f"SentencePiece defaults on raw text: {theirs:.1f} s")
    print(f"RESULT metric={ours:.1f}s baseline={theirs:.1f}s ratio={theirs / ours:.2f}")


if __name__ == "__main__":
    main()
