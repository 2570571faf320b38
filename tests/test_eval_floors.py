"""Evaluation that cannot flatter: generation floors (constant string, unrelated reference), bpc as the primary
endpoints with every other row Holm-corrected within its table, and NTREX Persian as a second bpc domain."""

from __future__ import annotations

import pytest

from langgraft.eval import metrics as M
from langgraft.eval.floors import commonest_openings, generation_floors
from langgraft.eval.records import build_examples, read_records
from langgraft.eval.report import holm, markdown, significance_marks
from langgraft.eval.tasks import load_task, shipped_tasks
from langgraft.pipeline.report import summary_lines


def _examples(name: str, data_dir, n: int):
    spec = load_task(shipped_tasks()[name])
    examples, _ = build_examples(spec, *read_records(spec.data, data_dir, spec.name))
    return spec, examples[:n]


def test_headline_floors_are_the_scores_of_outputs_that_read_nothing(data_dir):
    spec, examples = _examples("persian_headline", data_dir, 60)
    refs = [ex.refs for ex in examples]
    floors = generation_floors(spec.metrics, refs)
    constant = floors["constant_text"]
    assert constant in commonest_openings(refs) and constant.strip()
    rouge = floors["rougeL"]
    assert rouge["constant"] == pytest.approx(M.value("rougeL", M.generation_stats("rougeL", [constant] * 60,
                                                                                     refs).sum(0)))
    rotated = [rs[0] for rs in refs[1:] + refs[:1]]
    assert rouge["unrelated"] == pytest.approx(M.value("rougeL", M.generation_stats("rougeL", rotated,
                                                                                      refs).sum(0)))
    assert rouge["floor"] == max(rouge["constant"], rouge["unrelated"]) > 0  # real headlines share words


def test_translation_floors_cover_every_metric(data_dir):
    spec, examples = _examples("ntrex_en_fa", data_dir, 12)
    floors = generation_floors(spec.metrics, [ex.refs for ex in examples])
    assert set(floors) == {"constant_text", "chrfpp", "bleu"} and floors["chrfpp"]["floor"] > 0
    assert generation_floors(spec.metrics, [examples[0].refs]) == {}  # one example: no unrelated reference


def test_holm_adjusts_in_input_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == [] and holm([0.5]) == [0.5]


def _doc(comparisons: list[dict], floors: dict | None = None) -> dict:
    tasks = {"bpc_fa": {"lang": "fa", "kind": "intrinsic", "suites": ["fa_core"], "metrics": ["bpc"], "n": 40},
             "headline": {"lang": "fa", "kind": "generate", "suites": ["fa_core"], "metrics": ["rougeL"], "n": 40},
             "senti": {"lang": "fa", "kind": "choice", "suites": ["fa_core"], "metrics": ["acc"], "n": 40,
                       "chance": 0.5}}
    if floors:
        tasks["headline"]["floors"] = floors
    cell = {"value": 0.04, "ci": [0.03, 0.05], "n": 40}
    results = {m: {"bpc_fa": {"bpc": {**cell, "value": 1.2}}, "headline": {"rougeL": cell},
                   "senti": {"acc": {**cell, "value": 0.6}}} for m in ("base", "tuned")}
    return {"models": {"base": "a", "tuned": "b"}, "tasks": tasks, "results": results, "comparisons": comparisons}


def _cmp(task: str, metric: str, p: float) -> dict:
    return {"task": task, "metric": metric, "model": "tuned", "baseline": "base", "p": p, "significant": p < 0.05,
            "better": True, "delta": 0.1, "ci": [0.01, 0.2]}


def test_primary_bpc_is_tested_alone_and_the_rest_holm_corrected():
    doc = _doc([_cmp("bpc_fa", "bpc", 0.03), _cmp("headline", "rougeL", 0.04), _cmp("senti", "acc", 0.03)])
    marks = significance_marks(doc)
    assert marks == {("tuned", "bpc_fa", "bpc"): " ▲"}  # 0.03 and 0.04 in a family of two: both 0.06
    doc = _doc([_cmp("headline", "rougeL", 0.01), _cmp("senti", "acc", 0.02)])
    assert set(significance_marks(doc)) == {("tuned", "headline", "rougeL"), ("tuned", "senti", "acc")}


def test_a_score_that_does_not_clear_its_floor_is_marked():
    floors = {"rougeL": {"constant": 0.05, "unrelated": 0.03, "floor": 0.05}}
    report = markdown(_doc([], floors))
    row = next(line for line in report.splitlines() if line.startswith("| headline |"))
    assert "floor 5.0 (constant 5.0, unrelated 3.0)" in row and row.count("⊥") == 2
    summary = {"tokenizer": {}, "intrinsic": {}, "classification": {},
               "generation": {"fa": {"headline": {"metric": "rougeL", "n": 40, "floor": 0.05,
                                                  "values": {"base": 0.04, "tuned": 0.07}}}}}
    assert summary_lines(summary, "fa") == [
        "headline rougeL (n=40, floor 5.0%): base 4.0% → tuned 7.0%; not above the floor: base"]


def test_ntrex_persian_is_a_second_bpc_domain(data_dir):
    spec, examples = _examples("bpc_fa_ntrex", data_dir, 10_000)
    assert spec.kind == "intrinsic" and "fa_core" in spec.suites and spec.metrics[0] == "bpc"
    assert len(examples) == 1997 and all(ex.text.strip() for ex in examples)
