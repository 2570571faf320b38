"""The files passed between stages: each written and read by its one owner module, bad ones one line each."""

import json

import pytest

from langgraft.errors import UserError
from langgraft.formats.langgraft_json import read_langgraft_json, write_langgraft_json
from langgraft.formats.new_tokens import copy_new_tokens, read_new_tokens, write_new_tokens


def test_new_tokens_round_trip_and_checks(tmp_path):
    tokens = [{"id": 5, "token": "سلام", "text": "سلام", "base_ids": [1, 2]}]
    write_new_tokens(tmp_path, 5, tokens)
    assert read_new_tokens(tmp_path) == {"base_vocab_size": 5, "vocab_size": 6, "tokens": tokens}
    assert copy_new_tokens(tmp_path, (tmp_path / "copy").mkdir() or tmp_path / "copy")
    assert read_new_tokens(tmp_path / "copy")["tokens"] == tokens
    assert not copy_new_tokens(tmp_path / "nowhere", tmp_path)
    with pytest.raises(UserError, match=r"model .*nowhere: no new_tokens\.json \(expected a `langgraft extend`"):
        read_new_tokens(tmp_path / "nowhere", flag="model", made_by="`langgraft extend`")
    path = tmp_path / "new_tokens.json"
    for text, message in (("{", r"new_tokens\.json:1: not valid JSON"), ("[]", "expected a JSON object"),
                          ('{"base_vocab_size": 1, "vocab_size": 2}', "missing field tokens"),
                          ('{"base_vocab_size": 1, "vocab_size": 2, "tokens": [{"id": "x"}]}',
                           r"tokens\[0\] has no integer id")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=message):
            read_new_tokens(tmp_path)


def test_langgraft_json_round_trip_and_checks(tmp_path):
    assert read_langgraft_json(tmp_path) == {}
    write_langgraft_json(tmp_path, "fa", {"digits": "latin"}, vocab_size=8)
    assert read_langgraft_json(tmp_path) == {"lang": "fa", "normalizer": {"digits": "latin"}, "vocab_size": 8}
    (tmp_path / "langgraft.json").write_text(json.dumps({"lang": "fa", "normalizer": ["x"]}))
    with pytest.raises(UserError, match="normalizer is not an object"):
        read_langgraft_json(tmp_path)
