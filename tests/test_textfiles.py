"""The one text-file reader: one error wording naming file and line, the BOM dropped by every verb that reads text."""

from collections import Counter

import pytest

from langgraft.errors import UserError
from langgraft.textfiles import iter_lines, iter_texts, parse_pairs

BOM = "\ufeff"


def test_bad_bytes_and_bad_json_name_file_and_line(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_bytes("خوب\n".encode() + b"ok \xff\n")
    with pytest.raises(UserError, match=r"a\.txt:2: not valid UTF-8 \(byte 0xff at byte 4 of the line\)"):
        list(iter_texts(txt))
    jsonl = tmp_path / "a.jsonl"
    for bad, what in (('{"text": ', r"not valid JSON \("), ('{"body": "b"}', "no field 'text'"),
                      ("[1]", "no field 'text'"), ('{"text": 3}', "field 'text' is int, not a string")):
        jsonl.write_text('{"text": "a"}\n\n' + bad + "\n", encoding="utf-8")
        with pytest.raises(UserError, match=rf"a\.jsonl:3: {what}"):
            list(iter_texts(jsonl))


def test_bom_is_not_text(tmp_path):
    txt, jsonl = tmp_path / "a.txt", tmp_path / "a.jsonl"
    txt.write_text(BOM + "سلام\n\nدنیا\n", encoding="utf-8")
    jsonl.write_text(BOM + '{"text": "سلام"}\n{"text": null}\n', encoding="utf-8")
    skipped = Counter()
    assert list(iter_texts(txt, skipped=skipped)) == ["سلام", "دنیا"] and skipped == {"empty_line": 1}
    assert list(iter_texts(jsonl, skipped=skipped)) == ["سلام"] and skipped["null_field"] == 1
    assert [line for line, _ in iter_lines(txt)] == ["سلام", "", "دنیا"]


def test_every_reader_drops_the_bom(tmp_path):
    from langgraft.data.config import SourceConfig
    from langgraft.data.readers import decoded_lines, read_unit
    from langgraft.eval.records import read_records
    from langgraft.eval.tasks import DataSpec
    from langgraft.tokenizer.metrics import read_lines

    (tmp_path / "t.txt").write_text(BOM + "1 سلام\n", encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(BOM + '{"text": "سلام"}\n', encoding="utf-8")
    (tmp_path / "t.csv").write_text(BOM + "text\nسلام\n", encoding="utf-8")
    assert read_lines(tmp_path / "t.jsonl") == ["سلام"] and read_lines(tmp_path / "t.txt") == ["1 سلام"]
    assert next(decoded_lines(str(tmp_path / "t.txt"))) == ("1 سلام", 1)
    (tmp_path / "t.json").write_text(BOM + '[{"text": "سلام"}]', encoding="utf-8")
    unit = {"reader": "json", "path": str(tmp_path / "t.json")}
    assert [r for r, _ in read_unit(unit, SourceConfig(), True, {})] == [{"text": "سلام"}]
    for spec, record in ((DataSpec(path="t.jsonl"), {"text": "سلام"}),
                         (DataSpec(path="t.csv", format="csv"), {"text": "سلام"}),
                         (DataSpec(path="t.txt", format="lines", columns=["label", "text"]),
                          {"label": "1", "text": "سلام"}),
                         (DataSpec(format="parallel", files={"text": "t.txt"}), {"text": "1 سلام"})):
        assert read_records(spec, tmp_path, "t")[0] == [record]


def test_name_path_pairs():
    assert parse_pairs(["a=x", "b=y=z"], "--text") == {"a": "x", "b": "y=z"}
    with pytest.raises(UserError, match=r"--text 'a': expected NAME=PATH"):
        parse_pairs(["a"], "--text")
    with pytest.raises(UserError, match=r"--text 'a=y': name 'a' given twice"):
        parse_pairs(["a=x", "a=y"], "--text")
