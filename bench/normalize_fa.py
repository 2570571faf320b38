"""Throughput of the Persian normaliser vs shekar's `Normalizer` on real Persian news (same process, same text).

Text: title, abstract and paragraphs of the Fars News and Varzesh3 JSON files in ../shared/data (one normalise call
per paragraph, as the corpus pipeline does). Single process.

    pip install -e ".[bench]"    # shekar, the baseline
    python bench/normalize_fa.py [--shekar-lines 3000]
"""

from __future__ import annotations

import argparse
import time

from langgraft.lang import get_language

from benchdata import FARS, VARZESH3, news_texts  # bench/ is on sys.path when run as a script


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
    texts = news_texts(FARS, VARZESH3)
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
