"""Readers (chunking, line numbers, UTF-8 errors), language ID and filters on real text."""

from __future__ import annotations

import json

import pytest

from langgraft.data.config import DatasetConfig, FilterConfig, SourceConfig
from langgraft.data.filters import _repetition, clean, identify, make_cleaner
from langgraft.data.readers import count_lines, plan_units, read_unit
from langgraft.errors import UserError
from helpers import news_articles

ARABIC = "ذهب الطالب إلى المكتبة صباحاً ليقرأ كتاباً عن تاريخ العلوم في العصر العباسي، ثم عاد إلى البيت."


def _quran_lines(data_dir, n):
    path = data_dir / "parsinlu/data/translation/quran/fa.fooladvand.norm.txt"
    return path.read_text(encoding="utf-8").splitlines()[:n]


def test_chunks_cover_the_file_once_with_exact_line_numbers(tmp_path, data_dir):
    lines = _quran_lines(data_dir, 400)
    path = tmp_path / "q.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = DatasetConfig(name="q", sources=[SourceConfig(path="q.txt")])
    units = plan_units(ds, tmp_path, chunk_bytes=4096)
    assert len(units) > 5 and units[0]["start"] == 0 and units[-1]["end"] == path.stat().st_size
    assert all(a["end"] == b["start"] for a, b in zip(units, units[1:]))
    seen = []
    for unit in units:
        for record, where in read_unit(unit, ds.sources[0], False, {}):
            seen.append((record["text"], int(where.rsplit(":", 1)[1])))
    expected = [(text, i + 1) for i, text in enumerate(lines) if text.strip()]
    assert seen == expected
    assert count_lines(path) == 400


def test_invalid_utf8_in_a_later_chunk_names_file_offset_and_line(tmp_path, data_dir):
    lines = _quran_lines(data_dir, 200)
    good = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "q.txt"
    path.write_bytes(good + b"abc \xc3\x28 def\n")
    ds = DatasetConfig(name="q", sources=[SourceConfig(path="q.txt")])
    units = plan_units(ds, tmp_path, chunk_bytes=2048)
    with pytest.raises(UserError, match=rf"q\.txt:201: not valid UTF-8 \(byte 0x[0-9a-f]{{2}} at byte {len(good) + 4} of the file\)"):
        for unit in units:
            list(read_unit(unit, ds.sources[0], False, {}))


def test_jsonl_explode_and_csv_columns(tmp_path, data_dir):
    seed = data_dir / "self_instruct/data/seed_tasks.jsonl"
    first = json.loads(seed.read_text(encoding="utf-8").splitlines()[0])
    src = SourceConfig(path=str(seed), records="instances")
    unit = plan_units(DatasetConfig(name="s", kind="instructions", sources=[src]), tmp_path, 1 << 30)[0]
    record, where = next(read_unit(unit, src, False, {}))
    assert record["instruction"] == first["instruction"] and where.endswith(":1")
    farstail = SourceConfig(path=str(data_dir / "farstail/data/Val-word.csv"), reader="tsv")
    unit = plan_units(DatasetConfig(name="f", sources=[farstail]), tmp_path, 1 << 30)[0]
    row, _ = next(read_unit(unit, farstail, False, {}))
    assert set(row) >= {"premise", "hypothesis", "label"}


def test_langid_tells_persian_from_arabic(data_dir):
    persian = "\n".join(news_articles(data_dir, "news/fars-news-2.json", 1)[0]["paragraphs"])
    f = FilterConfig()
    assert identify(persian, f)[0] == "fa" and identify(ARABIC, f)[0] == "ar"
    restricted = FilterConfig(langid_candidates=["fa", "ar", "ur"])
    assert identify(ARABIC, restricted)[0] == "ar"
    cleaner = make_cleaner(DatasetConfig(name="m"), {}, {"fa"})
    kept, reason = clean({"text": persian}, "fa", cleaner, {})
    assert reason == "" and kept["text"]
    assert clean({"text": ARABIC}, "fa", cleaner, {}) == (None, "langid_ar")
    assert clean({"text": "کوتاه"}, "fa", cleaner, {}) == (None, "too_short")


def test_repetition_and_pair_filters(data_dir):
    f = FilterConfig()
    line = _quran_lines(data_dir, 1)[0]
    assert _repetition("\n".join([line] * 4 + ["یک خط دیگر"]), f) == "repeated_lines"
    assert _repetition(" ".join(["خبر فوری"] * 40), f) == "repeated_ngrams"
    assert _repetition(" ".join(_quran_lines(data_dir, 5)), f) == ""
    cleaner = make_cleaner(DatasetConfig(name="p", kind="bilingual", filters=FilterConfig(min_chars=1,
                                                                                          langid=False)), {},
                           {"en", "fa"})
    pair = {"src_lang": "en", "tgt_lang": "fa"}
    assert clean({**pair, "src": "Hello there", "tgt": ""}, "", cleaner, {}) == (None, "empty_side")
    assert clean({**pair, "src": "Hello there", "tgt": "Hello there"}, "", cleaner, {}) == (None, "identical_sides")
    assert clean({**pair, "src": "Hi", "tgt": line}, "", cleaner, {}) == (None, "length_ratio")
    assert clean({**pair, "src": line, "tgt": line + "x"}, "", cleaner, {})[1] == "wrong_script_src"


def test_parquet_hf_gzip_and_block_sources(tmp_path, data_dir):
    import gzip

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = _quran_lines(data_dir, 6)
    pq.write_table(pa.table({"body": lines}), tmp_path / "q.parquet")
    datasets.Dataset.from_dict({"body": lines}).save_to_disk(str(tmp_path / "hf"))
    with gzip.open(tmp_path / "q.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(lines[:2]) + "\n\n\n" + "\n".join(lines[2:]) + "\n", encoding="utf-8")
    sources = [SourceConfig(path="q.parquet", text=["body"]), SourceConfig(path=str(tmp_path / "hf"), reader="hf",
                                                                         text=["body"]),
               SourceConfig(path="q.txt.gz"), SourceConfig(path="b.txt", reader="blocks")]
    ds = DatasetConfig(name="m", sources=sources)
    got = {}
    for unit in plan_units(ds, tmp_path, 1 << 30):
        src = sources[unit["source"]]
        got[unit["source"]] = [r.get("body", r.get("text")) for r, _ in read_unit(unit, src, False, {})]
    assert [len(g) for g in got.values()][:3] == [6, 6, 6], {k: len(v) for k, v in got.items()}
    assert got[0] == got[1] == got[2] == lines
    assert got[3] == ["\n".join(lines[:2]), "\n".join(lines[2:])]
