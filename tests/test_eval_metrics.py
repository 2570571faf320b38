"""Metrics: Persian-aware QA/ROUGE tokenization, additive statistics that reproduce sacreBLEU, bootstrap CIs."""

from __future__ import annotations

import numpy as np
import sacrebleu

from langgraft.eval import metrics as M
from langgraft.lang.words import words
from helpers import asset_lines


def test_persian_words_fold_letter_variants_digits_and_keep_zwnj_words():
    # Arabic yeh/kaf, Persian digits, a diacritic and punctuation; ZWNJ keeps می‌شود one word.
    assert words("كتاب يك، ۱۲ می\u200cشود!") == words("کتابِ یک 12 می\u200cشود") == ["کتاب", "یک", "12", "می\u200cشود"]
    assert M.qa_f1("بره (۳۰ فروردین)", "بره ۳۰ فروردين") == 1.0
    assert M.qa_f1("the cat sat", "a cat") == 2 * (1 / 2 * 1) / (1 / 2 + 1)


def test_rouge_l_is_lcs_f_measure():
    assert M.rouge_l("پلیس رشوه را رد کرد", "مأموران پلیس رشوه را رد کردند") == 2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6)
    assert M.rouge_l("", "x") == 0.0


def test_summed_stats_reproduce_sacrebleu_corpus_scores():
    refs = asset_lines("fa", 30)
    hyps = [" ".join(r.split()[: max(1, len(r.split()) // 2)]) for r in refs]  # half of each reference
    for metric, scorer in [("bleu", sacrebleu.BLEU()), ("chrf", sacrebleu.CHRF()),
                           ("chrfpp", sacrebleu.CHRF(word_order=2))]:
        stats = M.generation_stats(metric, hyps, [[r] for r in refs])
        ours = M.value(metric, stats.sum(0))
        assert abs(ours - scorer.corpus_score(hyps, [refs]).score) < 1e-9, metric


def test_choice_metrics_and_char_normalisation():
    # Choice 1 has the higher total log-likelihood; per character choice 0 wins.
    ll, choices = [[-6.0, -5.0]], [["long answer", "x"]]
    assert M.value("acc", M.choice_stats("acc", ll, choices, [0], 2).sum(0)) == 0.0
    assert M.value("acc_norm", M.choice_stats("acc_norm", ll, choices, [0], 2).sum(0)) == 1.0
    # Always predicting class 0 on gold [0, 0, 1, 1]: F1 of class 0 = 2/3, of class 1 = 0 -> macro 1/3.
    stats = M.choice_stats("macro_f1", [[0, -1]] * 4, [["a", "b"]] * 4, [0, 0, 1, 1], 2)
    assert abs(M.value("macro_f1", stats.sum(0)) - 1 / 3) < 1e-12


def test_intrinsic_values():
    stats = M.intrinsic_stats([(np.log(2) * 10, 5)], ["abcde\u0627"])  # 10 bits over 6 chars, 7 bytes
    assert abs(M.value("bpc", stats.sum(0)) - 10 / 6) < 1e-12
    assert abs(M.value("bpb", stats.sum(0)) - 10 / 7) < 1e-12
    assert abs(M.value("ppl", stats.sum(0)) - 2 ** 2) < 1e-9


def test_bootstrap_ci_and_paired_comparison():
    rng = np.random.default_rng(0)
    n = 400
    good = np.stack([(rng.random(n) < 0.8).astype(float), np.ones(n)], 1)
    bad = np.stack([(rng.random(n) < 0.5).astype(float), np.ones(n)], 1)
    r = M.bootstrap("acc", good)
    assert r["ci"][0] < r["value"] < r["ci"][1] and r["n"] == n
    assert 0.03 < r["ci"][1] - r["ci"][0] < 0.12  # about 2 * 1.96 * sqrt(.8 * .2 / 400) = 0.078
    diff = M.paired_bootstrap("acc", good, bad)
    assert diff["significant"] and diff["delta"] > 0.2 and diff["p"] < 0.01
    same = M.paired_bootstrap("acc", good, good.copy())
    assert not same["significant"] and same["delta"] == 0


def test_every_report_formats_a_metric_one_way():
    from langgraft.eval.metrics import fmt

    assert fmt("acc", 0.4583) == "45.8" and fmt("acc", 0.4583, unit=True) == "45.8%"
    assert fmt("rougeL", 0.5, unit=True) == "50.0%" and fmt("chrf", 41.26, unit=True) == "41.3"
    assert fmt("bpc", 2.93614, unit=True) == "2.936" and fmt("ppl", 12.345) == "12.3"
    assert fmt("acc", float("nan")) == "–"
