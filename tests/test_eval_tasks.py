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


def test_blank_choices_are_dropped_and_the_gold_index_follows(tmp_path, data_dir):
    rows = [{"x": "q1", "c": ["a", "", "b", "c"], "y": 3}, {"x": "q2", "c": ["a", "b", " ", "c"], "y": 4},
            {"x": "q3", "c": ["a", "", "b", "c"], "y": 2}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = load_task(_write_task(tmp_path, choices=[], choices_field="c", label_offset=1))
    examples, skipped = build_examples(spec, *read_records(spec.data, tmp_path, spec.name))
    assert [(ex.choices, ex.gold) for ex in examples] == [(["a", "b", "c"], 1), (["a", "b", "c"], 2)]
    assert skipped == {"gold choice is empty": 1}
    # the shipped ParsiNLU questions padded to 4 with "" keep only their real options and their gold answer
    spec = load_task(shipped_tasks()["parsinlu_mc_ck"])
    records, shown = read_records(spec.data, data_dir, spec.name)
    examples, _ = build_examples(spec, records, shown)
    padded = [k for k, r in enumerate(records) if "" in r["candidates"]]
    assert len(padded) == 19 and all(len(examples[k].choices) == 4 - records[k]["candidates"].count("")
                                     for k in padded)
    assert all(examples[k].choices[examples[k].gold] == records[k]["candidates"][int(records[k]["answer"]) - 1]
               for k in range(len(records)))


def _sst2_records(data_dir, n):
    lines = (data_dir / "sst2" / "data" / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()[:n]
    return [{"x": line[2:], "y": line[0]} for line in lines]


@pytest.mark.parametrize("pattern", ["parts/part-*.jsonl", "parts/part-?.jsonl", "parts/part-[12].jsonl",
                                     "parts/**/*.jsonl"])
def test_data_path_glob_reads_every_matching_file_as_one_task(tmp_path, data_dir, pattern):
    from langgraft.eval.records import data_files

    recs = _sst2_records(data_dir, 7)
    (tmp_path / "parts").mkdir()
    for name, chunk in (("part-2.jsonl", recs[4:]), ("part-1.jsonl", recs[:4])):  # written out of order
        (tmp_path / "parts" / name).write_text("".join(json.dumps(r) + "\n" for r in chunk))
    spec = load_task(_write_task(tmp_path, data={"path": pattern}))
    records, shown = read_records(spec.data, tmp_path, spec.name)
    assert records == recs and "2 files" in shown  # sorted by name: part-1 then part-2
    examples, _ = build_examples(spec, records, shown)
    assert [ex.vars["x"] for ex in examples] == [r["x"] for r in recs]
    assert [ex.id for ex in examples] == list(range(7))  # no own ids: positions across the files
    assert data_files(spec.data, tmp_path, spec.name) == [tmp_path / "parts/part-1.jsonl",
                                                          tmp_path / "parts/part-2.jsonl"]


def test_a_glob_matching_nothing_is_one_line_naming_the_pattern(tmp_path):
    spec = load_task(_write_task(tmp_path, data={"path": "parts/nope-*.jsonl"}))
    with pytest.raises(UserError, match=r"task t: data.path: no files match .*parts/nope-\*\.jsonl .*--data-root"):
        read_records(spec.data, tmp_path, spec.name)


def test_examples_keep_the_records_own_ids(data_dir):
    spec = load_task(shipped_tasks()["self_instruct_user"])
    records, shown = read_records(spec.data, data_dir, spec.name)
    examples, _ = build_examples(spec, records, shown)
    assert [ex.id for ex in examples] == [r["id"] for r in records] and examples[0].id == "user_oriented_task_0"
    # ParsiNLU's multiple-choice `id` names the source document (13 ids for 350 questions): not an example id
    spec = load_task(shipped_tasks()["parsinlu_mc_ml"])
    examples, _ = build_examples(spec, *read_records(spec.data, data_dir, spec.name))
    assert [ex.id for ex in examples] == list(range(350))


@pytest.mark.parametrize("case,want_own", [("unique", True), ("nested", True), ("duplicate", False),
                                           ("one missing", False), ("id_field off", False)])
def test_own_ids_only_when_every_record_has_a_unique_one(tmp_path, data_dir, case, want_own):
    recs = _sst2_records(data_dir, 5)
    for i, r in enumerate(recs):
        r["id"] = f"sst-{i * 7}" if case != "duplicate" else f"sst-{i // 2}"
        r["meta"] = {"uid": 100 + i}
    if case == "one missing":
        del recs[3]["id"]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    over = {"nested": {"id_field": "meta.uid"}, "id_field off": {"id_field": ""}}.get(case, {})
    spec = load_task(_write_task(tmp_path, **over))
    examples, _ = build_examples(spec, *read_records(spec.data, tmp_path, spec.name))
    if not want_own:
        assert [ex.id for ex in examples] == list(range(5))
    elif case == "nested":
        assert [ex.id for ex in examples] == [str(100 + i) for i in range(5)]
    else:
        assert [ex.id for ex in examples] == [f"sst-{i * 7}" for i in range(5)]


def test_sample_seed_draws_the_same_random_examples_in_data_order(data_dir):
    from langgraft.eval.run import select_examples

    spec = load_task(shipped_tasks()["sst2"])
    every, _ = build_examples(spec, *read_records(spec.data, data_dir, spec.name))
    assert select_examples(every, 10, None, "sst2") == every[:10]
    a = select_examples(every, 10, 3, "sst2")
    assert a == select_examples(every, 10, 3, "sst2") and len({ex.id for ex in a}) == 10
    assert [ex.id for ex in a] == sorted(ex.id for ex in a) and a != every[:10]
    assert a != select_examples(every, 10, 4, "sst2") and a != select_examples(every, 10, 3, "rte")
    assert select_examples(every, len(every) + 5, 3, "sst2") == every


def test_list_tasks_shows_every_shipped_task_and_where_they_live(capsys):
    from langgraft.cli import main
    from langgraft.eval.tasks import tasks_dir

    with pytest.raises(SystemExit) as stop:
        main(["eval", "--list-tasks"])  # no --out needed, like --help
    assert stop.value.code == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip() and ":" not in line.split()[0]}
    for name, path in shipped_tasks().items():
        spec = load_task(path)
        assert rows[name][1:3] == [spec.lang, spec.kind], name
    assert f"task YAMLs: {tasks_dir()}" in out and "fa_core (" in out
