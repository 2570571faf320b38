"""Throughput of the Persian normaliser vs shekar's `Normalizer` on real Persian news (same process, same text).

Text: title, abstract and paragraphs of the Fars News and Varzesh3 JSON files in ../shared/data (one normalise call
per paragraph, as the corpus pipeline does). Single process.

    python bench/normalize_fa.py [--shekar-lines 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from langgraft.lang import get_language

DATA = Path(os.environ.get("LANGGRAFT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def news_paragraphs() -> list[str]:
    root = DATA / "persian_news" / "exploring-datasets"
    files = sorted((root / "news").glob("fars-news-*.json")) + sorted((root / "sports").glob("varzesh3-*.json"))
    texts = []
    for path in files:
        for article in json.loads(path.read_text(encoding="utf-8")):
            texts += [article.get("title", ""), article.get("abstract", ""), *article.get("paragraphs", [])]
    return [t for t in texts if t.strip()]


def throughput(fn, texts: list[str]) -> float:
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    start = time.perf_counter()
    for t in texts:
        fn(t)
    return mb / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shekar-lines", type=int, default=3000, help="shekar is slow: time it on a prefix")
    args = parser.parse_args()
    texts = news_paragraphs()
    normalize = get_language("fa").normalize
    ours = throughput(normalize, texts)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"langgraft fa: {mb:.1f} MB in {len(texts)} paragraphs, {ours:.2f} MB/s")
    from shekar import Normalizer

    shekar = Normalizer()
    theirs = throughput(shekar.normalize, texts[: args.shekar_lines])
    print(f"shekar Normalizer: {theirs:.2f} MB/s (first {args.shekar_lines} paragraphs)")
    print(f"RESULT metric={ours:.2f}MB/s baseline={theirs:.2f}MB/s ratio={ours / theirs:.2f}")


if __name__ == "__main__":
    main()
