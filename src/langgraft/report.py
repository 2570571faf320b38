"""Human-readable views of `results.json`: report.md (a table per suite) and PNG charts.

Cells show the metric with its bootstrap 95% CI; the best model per row is bold; when several models are compared,
a mark after a value says the paired bootstrap against the first model found a significant difference
(▲ better, ▼ worse). Scores in [0, 1] are shown as percentages; BLEU/chrF are already 0-100. Charts: one
panel per task (headline metric, CI whiskers, dashed chance line for accuracies) and a Persian-vs-English scatter
of mean headline scores, one point per model in the order given (stages).
"""

from __future__ import annotations

from pathlib import Path

from langgraft.eval.tasks import LOWER_IS_BETTER
from langgraft.rundir import atomic_write_text

UNIT_METRICS = {"acc", "acc_norm", "macro_f1", "em", "f1", "rougeL"}


def _scale(metric: str, x: float) -> float:
    return x * 100 if metric in UNIT_METRICS else x


def _fmt(metric: str, x: float) -> str:
    if x != x:  # NaN
        return "–"
    return f"{_scale(metric, x):.{3 if metric in ('bpc', 'bpb') else 1}f}"


def suite_tasks(doc: dict) -> dict[str, list[str]]:
    """Suite -> tasks in results order; tasks without a suite go to `other`."""
    out: dict[str, list[str]] = {}
    for task, meta in doc["tasks"].items():
        for suite in meta.get("suites") or ["other"]:
            out.setdefault(suite, []).append(task)
    return out


def _row(doc: dict, models: list[str], task: str, metric: str, marks: dict) -> str:
    cells = {m: doc["results"].get(m, {}).get(task, {}).get(metric) for m in models}
    present = [c["value"] for c in cells.values() if c and c["value"] == c["value"]]
    # Bold only when models differ: a row of ties has no best.
    best = (min if metric in LOWER_IS_BETTER else max)(present) if len(set(present)) > 1 else None
    parts = []
    for m in models:
        c = cells[m]
        if not c:
            parts.append("n/a")
            continue
        text = f"{_fmt(metric, c['value'])} [{_fmt(metric, c['ci'][0])}, {_fmt(metric, c['ci'][1])}]"
        if best is not None and c["value"] == best:
            text = f"**{_fmt(metric, c['value'])}** [{_fmt(metric, c['ci'][0])}, {_fmt(metric, c['ci'][1])}]"
        parts.append(text + marks.get((m, task, metric), ""))
    meta = doc["tasks"][task]
    chance = f"{100 * meta['chance']:.1f}" if "chance" in meta and metric in ("acc", "acc_norm") else ""
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    return f"| {task} | {metric} {arrow} | {meta['n']} | {chance} | " + " | ".join(parts) + " |"


def markdown(doc: dict) -> str:
    models = list(doc["models"])
    marks = {(c["model"], c["task"], c["metric"]): (" ▲" if c["better"] else " ▼")
             for c in doc.get("comparisons", []) if c["significant"]}
    lines = ["# Evaluation report", "",
             "Values with bootstrap 95% CIs; percentages for accuracy/F1/EM/ROUGE-L; **bold** = best; "
             f"▲/▼ = significantly better/worse than `{models[0] if models else '-'}` (paired bootstrap, p < 0.05).",
             ""]
    for suite, tasks in suite_tasks(doc).items():
        lines += [f"## {suite}", "", "| task | metric | n | chance | " + " | ".join(models) + " |",
                  "|---|---|---|---|" + "---|" * len(models)]
        for task in tasks:
            for metric in doc["tasks"][task]["metrics"]:
                lines.append(_row(doc, models, task, metric, marks))
        lines += ["", f"![{suite}](charts/{suite}.png)", ""]
    if len(models) > 0:
        lines += ["![Persian vs English](charts/fa_vs_en.png)", ""]
    skipped = {t: m["skipped"] for t, m in doc["tasks"].items() if m.get("skipped")}
    contaminated = {t: len(m["contaminated"]) for t, m in doc["tasks"].items() if m.get("contaminated")}
    if skipped:
        lines += ["## Skipped records", ""] + [f"- {t}: {s}" for t, s in skipped.items()] + [""]
    if contaminated:
        lines += ["## Contamination warnings", ""]
        lines += [f"- {t}: {n} examples share ≥ {doc['tasks'][t].get('contamination', {}).get('threshold', 1):.0%} "
                  "of their word 8-grams with the training data (per-example overlap: results.json)"
                  for t, n in contaminated.items()] + [""]
    if doc.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in doc["errors"]] + [""]
    return "\n".join(lines)


def suite_chart(doc: dict, suite: str, tasks: list[str], path: Path) -> None:
    """Small multiples: one panel per task (headline metric), one bar per model with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(doc["models"])
    cols = min(4, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        metric = doc["tasks"][task]["metrics"][0]
        vals, errs = [], [[], []]
        for m in models:
            c = doc["results"].get(m, {}).get(task, {}).get(metric)
            v = _scale(metric, c["value"]) if c else float("nan")
            lo, hi = (_scale(metric, c["ci"][0]), _scale(metric, c["ci"][1])) if c else (v, v)
            vals.append(v)
            errs[0].append(max(v - lo, 0))
            errs[1].append(max(hi - v, 0))
        ax.bar(range(len(models)), vals, yerr=errs, capsize=3, color=[f"C{i}" for i in range(len(models))])
        if "chance" in doc["tasks"][task] and metric in ("acc", "acc_norm"):
            ax.axhline(100 * doc["tasks"][task]["chance"], color="0.4", ls="--", lw=1)  # chance level
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{task}\n{metric}{' (lower better)' if metric in LOWER_IS_BETTER else ''}", fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def lang_means(doc: dict, lang: str) -> dict[str, float]:
    """Per model: mean headline score (0-100, higher better) over the language's non-intrinsic tasks."""
    out = {}
    for m in doc["models"]:
        vals = []
        for task, meta in doc["tasks"].items():
            metric = meta["metrics"][0]
            c = doc["results"].get(m, {}).get(task, {}).get(metric)
            if meta["lang"] == lang and metric not in LOWER_IS_BETTER and c and c["value"] == c["value"]:
                vals.append(_scale(metric, c["value"]))
        if vals:
            out[m] = sum(vals) / len(vals)
    return out


def scatter_chart(doc: dict, path: Path) -> None:
    """Persian vs English mean score, one point per model, joined in the order given (the stages)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fa, en = lang_means(doc, "fa"), lang_means(doc, "en")
    models = [m for m in doc["models"] if m in fa and m in en]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    xs, ys = [en[m] for m in models], [fa[m] for m in models]
    ax.plot(xs, ys, "-", color="0.7", zorder=1)
    for i, m in enumerate(models):
        ax.scatter(xs[i], ys[i], color=f"C{i}", zorder=2)
        ax.annotate(m, (xs[i], ys[i]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("English mean score (en tasks, headline metrics)")
    ax.set_ylabel("Persian mean score (fa tasks, headline metrics)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: Path, doc: dict) -> None:
    charts = out / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    for suite, tasks in suite_tasks(doc).items():
        suite_chart(doc, suite, tasks, charts / f"{suite}.png")
    scatter_chart(doc, charts / "fa_vs_en.png")
    atomic_write_text(out / "report.md", markdown(doc))
