"""Metrics as additive per-example statistics, so one bootstrap serves every metric.

Each metric turns one example into a vector of sufficient statistics and a corpus value is a function of their
sum: accuracy is (correct, 1), macro-F1 a flattened confusion matrix, bits per character (nats, tokens, chars,
bytes), BLEU/chrF sacreBLEU's own n-gram statistics (`_extract_corpus_statistics` / `_compute_score_from_stats`,
the pair sacreBLEU's paired bootstrap uses). Resampling examples is then a multinomial-weighted sum of rows.

The SQuAD-style F1/EM and ROUGE-L are written here because their usual implementations tokenize with ASCII-only
regexes (rouge_score drops every Persian character); ours count `lang.words` tokens, which fold Arabic/Persian
letter variants, digits and diacritics and keep ZWNJ-joined words whole, identically for every model.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from langgraft.lang.words import words

BOOTSTRAP = 1000

# What each metric means to a reader, written once: which task kind may use it, which way is better, whether it
# is a share shown as a percentage, whether it compares only models that share a tokenizer.
CHOICE_METRICS = {"acc", "acc_norm", "macro_f1"}
GENERATE_METRICS = {"em", "f1", "rougeL", "chrf", "chrfpp", "bleu"}
INTRINSIC_METRICS = {"bpc", "bpb", "ppl"}
LOWER_IS_BETTER = {"bpc", "bpb", "ppl"}
PERCENT = {"acc", "acc_norm", "macro_f1", "em", "f1", "rougeL"}  # shares in [0, 1]; BLEU and chrF are 0-100
PER_TOKEN = {"ppl"}  # counted per token: bpc and bpb compare any two tokenizers, ppl only equal ones
_EN_ARTICLES = {"a", "an", "the"}


def _qa_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in _EN_ARTICLES]


def qa_f1(pred: str, ref: str) -> float:
    p, r = _qa_words(pred), _qa_words(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(pred: str, ref: str) -> float:
    p, r = words(pred), words(ref)
    if not p or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in p:  # LCS by dynamic programming, one row at a time
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def _sacre(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU(effective_order=False)
    return CHRF(word_order=2 if name == "chrfpp" else 0)


def generation_stats(metric: str, preds: list[str], refs: list[list[str]]) -> np.ndarray:
    """(n, d) statistics for a generation metric; references may differ in number per example."""
    if metric in ("em", "f1", "rougeL"):
        fn = {"em": lambda p, r: float(_qa_words(p) == _qa_words(r)), "f1": qa_f1, "rougeL": rouge_l}[metric]
        return np.array([[max(fn(p, r) for r in rs), 1.0] for p, rs in zip(preds, refs)])
    scorer = _sacre(metric)
    rows = []
    for p, rs in zip(preds, refs):
        # One example at a time so examples with different numbers of references need no padding streams.
        rows.append(scorer._extract_corpus_statistics([p], [[r] for r in rs])[0])
    return np.array(rows, dtype=float)


def choice_stats(metric: str, logliks: list[list[float]], choices: list[list[str]], gold: list[int],
                 k: int) -> np.ndarray:
    rows = []
    for ll, ch, g in zip(logliks, choices, gold):
        if metric == "acc_norm":  # per character, never per token: fair across tokenizers
            pred = int(np.argmax([x / max(len(c), 1) for x, c in zip(ll, ch)]))
        else:
            pred = int(np.argmax(ll))
        if metric == "macro_f1":
            row = np.zeros(k * k)
            row[g * k + pred] = 1
            rows.append(row)
        else:
            rows.append([float(pred == g), 1.0])
    return np.array(rows, dtype=float)


def intrinsic_stats(nll_tokens: list[tuple[float, int]], texts: list[str]) -> np.ndarray:
    return np.array([[nll, n, len(t), len(t.encode("utf-8"))] for (nll, n), t in zip(nll_tokens, texts)],
                    dtype=float)


def value(metric: str, total: np.ndarray) -> float:
    """Corpus value of `metric` from summed statistics (0..1 for accuracies/F1, 0..100 for BLEU/chrF)."""
    if metric in ("acc", "acc_norm", "em", "f1", "rougeL"):
        return float(total[0] / total[1]) if total[1] else float("nan")
    if metric == "macro_f1":
        k = int(round(math.sqrt(len(total))))
        cm = total.reshape(k, k)  # rows gold, columns predicted
        f1s = []
        for c in range(k):
            if cm[c].sum() == 0 and cm[:, c].sum() == 0:
                continue  # a class absent from both gold and predictions does not count
            f1s.append(2 * cm[c, c] / (cm[c].sum() + cm[:, c].sum()))
        return float(np.mean(f1s)) if f1s else float("nan")
    if metric in ("bpc", "bpb", "ppl"):
        nll, tokens, chars, nbytes = total
        if metric == "ppl":
            return float(math.exp(nll / tokens))
        return float(nll / math.log(2) / (chars if metric == "bpc" else nbytes))
    return float(_sacre(metric)._compute_score_from_stats(list(total)).score)




def shown(metric: str, x: float) -> float:
    """A value on the scale reports show it: percentages for shares."""
    return x * 100 if metric in PERCENT else x


def fmt(metric: str, x: float, *, unit: bool = False) -> str:
    """A value as reports print it: shares as percentages with one decimal (`%` appended when `unit`), bits per
    character or byte with three, anything else with one; NaN (nothing measured) as a dash."""
    if x != x:
        return "–"
    digits = 3 if metric in ("bpc", "bpb") else 1
    return f"{shown(metric, x):.{digits}f}" + ("%" if unit and metric in PERCENT else "")


def _resample_weights(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).astype(float)


def bootstrap(metric: str, stats: np.ndarray, seed: int = 0) -> dict:
    """Value, 95% percentile CI and n of a metric over examples."""
    n = len(stats)
    point = value(metric, stats.sum(0))
    if n < 2:
        return {"value": point, "ci": [point, point], "n": n}
    sums = _resample_weights(n, seed) @ stats
    draws = np.array([value(metric, s) for s in sums])
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return {"value": point, "ci": [float(lo), float(hi)], "n": n}


def paired_bootstrap(metric: str, a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict:
    """Difference a - b on the same examples, resampled jointly: delta, 95% CI, two-sided p, significant."""
    n = len(a)
    delta = value(metric, a.sum(0)) - value(metric, b.sum(0))
    if n < 2:
        return {"delta": delta, "ci": [delta, delta], "p": 1.0, "significant": False, "n": n}
    weights = _resample_weights(n, seed)
    draws = np.array([value(metric, x) - value(metric, y) for x, y in zip(weights @ a, weights @ b)])
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    p = float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))
    return {"delta": delta, "ci": [float(lo), float(hi)], "p": p, "significant": bool(lo > 0 or hi < 0), "n": n}
