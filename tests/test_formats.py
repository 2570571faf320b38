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


def test_run_report_summary_and_training_files_round_trip_and_checks(tmp_path):
    from langgraft.formats.summary_json import read_summary, write_summary
    from langgraft.rundir.training import METRICS_NAME, read_metrics, read_train_config

    assert read_summary(tmp_path) is None and read_train_config(tmp_path) is None
    write_summary(tmp_path, {"arm": "control", "lines": ["Persian bpc 2.67"]})
    assert read_summary(tmp_path) == {"arm": "control", "lines": ["Persian bpc 2.67"]}
    for text, message in (("{", r"summary\.json:1: not valid JSON"), ("[1]", "expected a JSON object")):
        (tmp_path / "summary.json").write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=message):
            read_summary(tmp_path)
    (tmp_path / "train_config.json").write_text(json.dumps({"fingerprint": "f", "config": {"stage": "align"}}))
    assert read_train_config(tmp_path) == {"stage": "align"}
    (tmp_path / "train_config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"train_config\.json: not valid JSON"):
        read_train_config(tmp_path)
    # a line torn by a kill mid-append and a record without a step are left out, the order kept
    (tmp_path / METRICS_NAME).write_text('{"step": 1, "loss": 3.0}\n{"loss": 2}\n{"step": 2, "loss": 2.5}\n{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(tmp_path / METRICS_NAME)] == [1, 2]
