"""Task YAMLs as data: every shipped task loads and reads its real dataset; bad YAML and bad records fail clearly."""

from __future__ import annotations

import json

import pytest

from langgraft.errors import UserError
from langgraft.eval.records import build_examples, read_records, with_shots
from langgraft.eval.tasks import load_task, resolve_tasks, shipped_tasks, suites

# Record counts after documented skips, from ../shared/data/README.md (and label_map skips counted by reason).
EXPECTED = {"sst2": 872, "rte": 277, "farstail": 1564, "parsinlu_mc_lit": 350, "parsinlu_mc_ck": 350,
            "parsinlu_mc_ml": 350, "ntrex_en_fa": 1997, "self_instruct_user": 252, "persian_headline": 300,
            "bpc_fa": 175, "parsinlu_qqp": 1916}


def test_suites_cover_the_issue():
    s = suites()
    assert set(s["all"]) == set(shipped_tasks()) and len(s["all"]) >= 17
    assert {"sst2", "rte", "self_instruct_user", "bpc_en"} <= set(s["en_core"])
    assert {"parsinlu_sentiment_food", "parsinlu_sentiment_movie", "parsinlu_entailment", "farstail",
            "parsinlu_mc_lit", "parsinlu_mc_ck", "parsinlu_mc_ml", "parsinlu_qqp", "parsinlu_reading_comprehension",
            "ntrex_en_fa", "ntrex_fa_en", "persian_headline", "bpc_fa"} <= set(s["fa_core"])
    assert [p.stem for p in resolve_tasks(["sst2,rte", "sst2"])] == ["sst2", "rte"]
    with pytest.raises(UserError, match="--tasks nope"):
        resolve_tasks(["nope"])


@pytest.mark.parametrize("name", sorted(shipped_tasks()))
def test_shipped_task_reads_real_data(name, data_dir):
    spec = load_task(shipped_tasks()[name])
    records, shown = read_records(spec.data, data_dir, spec.name)
    examples, skipped = build_examples(spec, records, shown)
    assert examples, name
    if name in EXPECTED:
        assert len(examples) == EXPECTED[name]
    assert len(examples) + sum(skipped.values()) == len(records)  # nothing dropped silently
    if spec.shots_data is not None:
        assert build_examples(spec, *read_records(spec.shots_data, data_dir, spec.name))[0]
    first = examples[0]
    if spec.kind == "choice":
        assert all(0 <= ex.gold < len(ex.choices) for ex in examples)
        assert len({ex.gold for ex in examples}) > 1  # labels really vary
        assert spec.prompt.format(**first.vars)
    elif spec.kind == "generate":
        assert all(ex.refs and all(r.strip() for r in ex.refs) for ex in examples)
    else:
        assert all(ex.text for ex in examples)


def test_sentiment_skips_are_counted_by_reason(data_dir):
    spec = load_task(shipped_tasks()["parsinlu_sentiment_food"])
    records, shown = read_records(spec.data, data_dir, spec.name)
    examples, skipped = build_examples(spec, records, shown)
    raw = [r["sentiment"] for r in records]
    assert skipped["label '3' not in label_map"] == raw.count("3")
    assert skipped["label '0' not in label_map"] == raw.count("0")
    assert len(examples) == sum(raw.count(x) for x in ("-2", "-1", "1", "2"))


def test_reading_comprehension_keeps_every_gold_span(data_dir):
    spec = load_task(shipped_tasks()["parsinlu_reading_comprehension"])
    records, shown = read_records(spec.data, data_dir, spec.name)
    examples, _ = build_examples(spec, records, shown)
    assert examples[0].refs == [a[1] for a in records[0]["answers"]]


def test_shots_are_fixed_and_come_from_the_shots_file(data_dir):
    spec = load_task(shipped_tasks()["sst2"])
    dev, _ = build_examples(spec, *read_records(spec.data, data_dir, spec.name))
    train, _ = build_examples(spec, *read_records(spec.shots_data, data_dir, spec.name))
    ex = dev[3]
    a, b = with_shots(spec, ex, train, 3), with_shots(spec, ex, train, 3)
    assert a == b and a.count("Sentiment:") == 4 and a.endswith(spec.prompt.format(**ex.vars))
    demos = a.split(spec.shot_separator)[:3]
    train_sentences = {t.vars["sentence"] for t in train}
    assert all(d.split("\n")[0].removeprefix("Review: ") in train_sentences for d in demos)
    assert with_shots(spec, dev[4], train, 3) != a


def test_without_shots_file_shots_are_other_eval_examples(data_dir):
    spec = load_task(shipped_tasks()["rte"])
    assert spec.shots_data is None
    pool, _ = build_examples(spec, *read_records(spec.data, data_dir, spec.name))
    for ex in pool[:20]:
        prompt = with_shots(spec, ex, pool, 5)
        assert ex.vars["premise"] not in prompt[: -len(spec.prompt.format(**ex.vars))]


def _write_task(tmp_path, **over):
    base = {"name": "t", "lang": "en", "kind": "choice", "data": {"path": "d.jsonl"}, "metrics": ["acc"],
            "fields": {"x": "x"}, "prompt": "{x}:", "choices": ["a", "b"], "label": "y"}
    base.update(over)
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(base))
    return path


def test_bad_yaml_names_file_and_key(tmp_path):
    with pytest.raises(UserError, match=r"t\.yaml: unknown key promt"):
        load_task(_write_task(tmp_path, promt="x"))
    path = _write_task(tmp_path)
    raw = json.loads(path.read_text())
    del raw["kind"]
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError, match="missing required key kind"):
        load_task(path)
    with pytest.raises(UserError, match="metrics .*bleu.* not valid for kind choice"):
        load_task(_write_task(tmp_path, metrics=["bleu"]))


def test_record_missing_field_names_task_file_and_record(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"x": "a", "y": 0}\n{"x": "b"}\n')
    spec = load_task(_write_task(tmp_path))
    records, shown = read_records(spec.data, tmp_path, spec.name)
    with pytest.raises(UserError, match=r"task t: .*d\.jsonl: record 2: missing field 'y'"):
        build_examples(spec, records, shown)
