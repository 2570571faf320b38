"""Floors of generation tasks: what a score is worth before any model writes a word.

A ROUGE-L or chrF of a few points can be earned by output that ignores the input. Each generation task is also
scored, on the same examples, with two outputs that read nothing: an unrelated reference (each example gets the
next example's reference) and a constant string (the commonest opening of the references, of 1 to 5 words: the
best-scoring one, so the floor is never set low by a bad choice of constant). A model's score that does not clear
the higher floor is marked in the reports as not above the floor.
"""

from __future__ import annotations

from collections import Counter

from langgraft.eval import metrics as M


def commonest_openings(refs: list[list[str]], longest: int = 5) -> list[str]:
    """For each length 1..`longest`, the commonest first-N-words of the references (one candidate per length)."""
    out = []
    for n in range(1, longest + 1):
        counts = Counter(" ".join(r.split()[:n]) for rs in refs for r in rs[:1] if len(r.split()) >= n)
        if counts:
            out.append(counts.most_common(1)[0][0])
    return out


def generation_floors(metrics: list[str], refs: list[list[str]]) -> dict:
    """{"constant_text", metric: {"unrelated", "constant", "floor"}}: the two floors of each metric."""
    if len(refs) < 2 or not all(refs):
        return {}
    unrelated = [rs[0] for rs in refs[1:] + refs[:1]]
    candidates = commonest_openings(refs)
    out: dict = {}
    for metric in metrics:
        scores = {c: M.value(metric, M.generation_stats(metric, [c] * len(refs), refs).sum(0)) for c in candidates}
        best = max(scores, key=scores.get) if scores else ""
        entry = {"unrelated": M.value(metric, M.generation_stats(metric, unrelated, refs).sum(0)),
                 "constant": scores.get(best, float("nan"))}
        entry["floor"] = max(v for v in entry.values() if v == v)
        out[metric] = entry
        out.setdefault("constant_text", best)
    return out


def clears(meta: dict, metric: str, value: float) -> bool | None:
    """Whether `value` is above the task's floor for `metric` (None: the task has no floor)."""
    floor = meta.get("floors", {}).get(metric)
    return None if floor is None else value > floor["floor"]
