"""The data benchmarks read: the shared data root and the Persian news set in it.

Benchmarks import this as a sibling module (`python bench/NAME.py` puts bench/ on sys.path). The tests have their
own reader in tests/helpers.py: a benchmark does not import from the tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LANGGRAFT_DATA", ROOT.parent / "shared" / "data"))
NEWS = DATA / "persian_news" / "exploring-datasets"

FARS = "news/fars-news-*.json"
VARZESH3 = "sports/varzesh3-*.json"
NAMNAK = "health/namnak-5.json"


def news_articles(*patterns: str) -> list[dict]:
    """The articles (as stored) of the news files matching each glob under NEWS, patterns in order, files sorted."""
    return [a for pattern in patterns for path in sorted(NEWS.glob(pattern))
            for a in json.loads(path.read_text(encoding="utf-8"))]


def article_texts(article: dict) -> list[str]:
    """Title, abstract and each paragraph, in order; a missing one is an empty string or no paragraph."""
    return [article.get("title") or "", article.get("abstract") or "", *(article.get("paragraphs") or [])]


def news_texts(*patterns: str) -> list[str]:
    """Every non-blank title, abstract and paragraph of the matching articles, each its own text."""
    return [t for a in news_articles(*patterns) for t in article_texts(a) if t.strip()]


def news_documents(*patterns: str, sep: str = "\n") -> list[str]:
    """One document per matching article: its title, abstract and paragraphs joined by `sep`."""
    return [sep.join(article_texts(a)) for a in news_articles(*patterns)]


def write_dataset(ds: Path, splits: dict[str, list[str]], lang: str = "fa") -> Path:
    """A monolingual dataset named after its folder, in the layout `langgraft data prepare` writes (one parquet
    file per split); kept as it is when `ds` already holds one, so a rerun with the same --work reuses it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (ds / "dataset.json").is_file():
        return ds
    for split, texts in splits.items():
        (ds / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": texts, "lang": [lang] * len(texts)}), ds / split / "part-00000.parquet")
    meta = {"name": ds.name, "kind": "monolingual", "lang": lang, "splits": {
        split: {"files": [f"{split}/part-00000.parquet"], "records": len(texts)} for split, texts in splits.items()}}
    (ds / "dataset.json").write_text(json.dumps(meta))
    return ds
