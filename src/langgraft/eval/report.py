"""`langgraft eval`'s report: report.md (a table per suite) and PNG charts from a `results.json` document.

Cells show the metric with its bootstrap 95% CI; the best model per row is bold; when several models are compared,
a mark after a value says the paired bootstrap against the first model found a significant difference
(▲ better, ▼ worse). Scores in [0, 1] are shown as percentages; BLEU/chrF are already 0-100. Charts: one
panel per task (headline metric, CI whiskers, dashed chance line for accuracies, axes from zero) and a
Persian-vs-English scatter, one point per model in the order given (stages): mean headline score of the
languages' scored tasks when both languages have some, else mean bits per character, else no scatter at all.
Models at the same point share one label. How each metric reads (direction, percent or not, per token) is
`eval.metrics`'s to say; this module only lays it out.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.eval.metrics import LOWER_IS_BETTER, PER_TOKEN, PERCENT, fmt, shown
from langgraft.eval.floors import clears
from langgraft.eval.speed import speed_markdown
from langgraft.lang import ANCHOR, DEFAULT_TARGET, display_name
from langgraft.rundir import atomic_write_text


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
    # Bold only when models differ: a row of ties has no best; nor a per-token row across tokenizers.
    best = (min if metric in LOWER_IS_BETTER else max)(present) if len(set(present)) > 1 else None
    apart = metric in PER_TOKEN and not _one_tokenizer(doc, models)
    if apart:
        best = None
    parts = []
    for m in models:
        c = cells[m]
        if not c:
            parts.append("n/a")
            continue
        text = f"{fmt(metric, c['value'])} [{fmt(metric, c['ci'][0])}, {fmt(metric, c['ci'][1])}]"
        if best is not None and c["value"] == best:
            text = f"**{fmt(metric, c['value'])}** [{fmt(metric, c['ci'][0])}, {fmt(metric, c['ci'][1])}]"
        below = clears(doc["tasks"][task], metric, c["value"]) is False
        parts.append(text + marks.get((m, task, metric), "") + (" ⊥" if below else ""))
    meta = doc["tasks"][task]
    chance = f"{100 * meta['chance']:.1f}" if "chance" in meta and metric in ("acc", "acc_norm") else ""
    if metric in meta.get("floors", {}):
        f = meta["floors"][metric]
        chance = f"floor {fmt(metric, f['floor'])} (constant {fmt(metric, f['constant'])}, unrelated " \
                 f"{fmt(metric, f['unrelated'])})"
    arrow = ("↓" if metric in LOWER_IS_BETTER else "↑") + (" †" if apart else "")
    return f"| {task} | {metric} {arrow} | {meta['n']} | {chance} | " + " | ".join(parts) + " |"


def _one_tokenizer(doc: dict, models: list[str]) -> bool:
    ids = {doc.get("tokenizers", {}).get(m) for m in models}
    return len(ids) == 1 and None not in ids


def markdown(doc: dict) -> str:
    models = list(doc["models"])
    marks = significance_marks(doc)
    lines = ["# Evaluation report", "",
             "Values with bootstrap 95% CIs; percentages for accuracy/F1/EM/ROUGE-L; **bold** = best; "
             f"▲/▼ = significantly better/worse than `{models[0] if models else '-'}` (paired bootstrap): bits per "
             "character, the declared primary endpoints, at p < 0.05; every other row Holm-corrected within its "
             "table (family-wise p < 0.05), and exploratory. Generation rows show their floor (the better of a "
             "constant string, the references' commonest opening, and an unrelated reference); ⊥ = not above it.",
             ""]
    if any(metric in PER_TOKEN for meta in doc["tasks"].values() for metric in meta["metrics"]) and \
            not _one_tokenizer(doc, models):
        lines += ["† ppl is per token: it compares only models that share a tokenizer, so these models (several "
                  "tokenizers) are not ranked or tested on it; bpc/bpb compare across tokenizers.", ""]
    for suite, tasks in suite_tasks(doc).items():
        lines += [f"## {suite}", "", "| task | metric | n | chance / floor | " + " | ".join(models) + " |",
                  "|---|---|---|---|" + "---|" * len(models)]
        for task in tasks:
            for metric in doc["tasks"][task]["metrics"]:
                lines.append(_row(doc, models, task, metric, marks))
        lines += ["", f"![{suite}](charts/{suite}.png)", ""]
    if scatter_axes(doc) is not None:
        target = scatter_target(doc)
        lines += [f"![{display_name(target)} vs {display_name(ANCHOR)}](charts/{scatter_file(doc)})", ""]
    lines += speed_markdown(doc)
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


PRIMARY = ("bpc",)  # the declared primary endpoints: tested alone, not corrected for the table's other rows


def significance_marks(doc: dict) -> dict:
    """(model, task, metric) -> " ▲"/" ▼": primary metrics at p < 0.05 (the bootstrap CI excludes 0); the rest of
    each suite's table Holm-corrected as one family."""
    marks = {}
    suites = suite_tasks(doc)
    for c in doc.get("comparisons", []):
        if c["metric"] in PRIMARY and c["significant"]:
            marks[(c["model"], c["task"], c["metric"])] = " ▲" if c["better"] else " ▼"
    for tasks in suites.values():
        family = [c for c in doc.get("comparisons", []) if c["task"] in tasks and c["metric"] not in PRIMARY]
        for c, p in zip(family, holm([c.get("p", 1.0) for c in family])):
            if p < 0.05:
                marks[(c["model"], c["task"], c["metric"])] = " ▲" if c["better"] else " ▼"
    return marks


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


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
            v = shown(metric, c["value"]) if c else float("nan")
            lo, hi = (shown(metric, c["ci"][0]), shown(metric, c["ci"][1])) if c else (v, v)
            vals.append(v)
            errs[0].append(max(v - lo, 0))
            errs[1].append(max(hi - v, 0))
        ax.bar(range(len(models)), vals, yerr=errs, capsize=3, color=[f"C{i}" for i in range(len(models))])
        if "chance" in doc["tasks"][task] and metric in ("acc", "acc_norm"):
            ax.axhline(100 * doc["tasks"][task]["chance"], color="0.4", ls="--", lw=1)  # chance level
        tops = [v + e for v, e in zip(vals, errs[1]) if v == v]  # NaN (no result) has no bar
        ax.set_ylim(0, 100 if metric in PERCENT else max(max(tops, default=0) * 1.1, 1e-6))
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{task}\n{metric}{' (lower better)' if metric in LOWER_IS_BETTER else ''}", fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def lang_means(doc: dict, lang: str, kind: str = "score") -> dict[str, float]:
    """Per model: the mean over the language's tasks of the headline score (kind "score": 0-100, higher better,
    scored tasks only) or of bits per character (kind "bpc": intrinsic tasks, lower better)."""
    out = {}
    for m in doc["models"]:
        vals = []
        for task, meta in doc["tasks"].items():
            metric = "bpc" if kind == "bpc" else meta["metrics"][0]
            if meta["lang"] != lang or metric not in meta["metrics"] or (kind == "score") == (metric in LOWER_IS_BETTER):
                continue
            c = doc["results"].get(m, {}).get(task, {}).get(metric)
            if c and c["value"] == c["value"]:
                vals.append(shown(metric, c["value"]))
        if vals:
            out[m] = sum(vals) / len(vals)
    return out


def scatter_target(doc: dict) -> str:
    """The language the scatter chart sets against the anchor: the first other language the tasks are in."""
    return next((m["lang"] for m in doc["tasks"].values() if m.get("lang") not in (None, ANCHOR)), DEFAULT_TARGET)


def scatter_file(doc: dict) -> str:
    return f"{scatter_target(doc)}_vs_{ANCHOR}.png"


def scatter_axes(doc: dict) -> tuple[str, dict, dict, list[str]] | None:
    """(kind, target means, anchor means, models) for the target-vs-anchor chart (e.g. Persian vs English), or
    None when the run has no measure both languages share (then the chart is left out rather than drawn empty)."""
    for kind in ("score", "bpc"):
        target, anchor = lang_means(doc, scatter_target(doc), kind), lang_means(doc, ANCHOR, kind)
        models = [m for m in doc["models"] if m in target and m in anchor]
        if models:
            return kind, target, anchor, models
    return None


def scatter_chart(doc: dict, path: Path) -> bool:
    """Target vs anchor language, one point per model, joined in the order given (the stages); False when not
    drawn."""
    axes = scatter_axes(doc)
    if axes is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind, target, anchor, models = axes
    fig, ax = plt.subplots(figsize=(4.5, 4))
    xs, ys = [anchor[m] for m in models], [target[m] for m in models]
    ax.plot(xs, ys, "-", color="0.7", zorder=1)
    for i, m in enumerate(models):
        ax.scatter(xs[i], ys[i], color=f"C{i}", zorder=2)
    xtop, ytop = (100.0, 100.0) if kind == "score" else (max(xs) * 1.25, max(ys) * 1.15)
    ax.set_xlim(0, xtop)
    ax.set_ylim(0, ytop)
    groups = _same_point(models, xs, ys)  # one label per point: equal scores do not overprint
    for (x, y), names, lift in zip(groups, groups.values(), _label_rows(list(groups), xtop, ytop)):
        ax.annotate(", ".join(names), (x, y), fontsize=8, xytext=(5, 3 + 10 * lift), textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if lift else None)
    what = ("mean score (headline metrics of scored tasks, %)" if kind == "score"
            else "mean bits per character (lower is better)")
    ax.set_xlabel(f"{display_name(ANCHOR)} {what}", fontsize=8)
    ax.set_ylabel(f"{display_name(scatter_target(doc))} {what}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _same_point(models: list[str], xs: list[float], ys: list[float]) -> dict[tuple[float, float], list[str]]:
    """Models grouped by their point at the precision the labels could tell apart (in model order)."""
    span = max(xs + ys + [1e-9]) - min(xs + ys + [0.0])
    grain = span / 50 or 1.0
    groups: dict[tuple[float, float], list[str]] = {}
    firsts: dict[tuple[int, int], tuple[float, float]] = {}
    for m, x, y in zip(models, xs, ys):
        key = (round(x / grain), round(y / grain))
        groups.setdefault(firsts.setdefault(key, (x, y)), []).append(m)
    return groups


def _label_rows(points: list[tuple[float, float]], xtop: float, ytop: float) -> list[int]:
    """Text rows (of ~10 points) to lift each label by so that labels of nearby points do not overprint: a label
    is about a quarter of the axes wide and a twentieth high."""
    placed: list[tuple[float, float]] = []
    rows = []
    for x, y in points:
        xf, yf, lift = x / xtop, y / ytop, 0
        while any(abs(xf - px) < 0.25 and abs(yf + lift * 0.045 - py) < 0.045 for px, py in placed):
            lift += 1
        placed.append((xf, yf + lift * 0.045))
        rows.append(lift)
    return rows


def write_report(out: Path, doc: dict) -> None:
    """report.md and charts/ (one chart per suite, Persian vs English when the run has a shared measure)."""
    charts = out / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    for suite, tasks in suite_tasks(doc).items():
        suite_chart(doc, suite, tasks, charts / f"{suite}.png")
    scatter_chart(doc, charts / scatter_file(doc))
    atomic_write_text(out / "report.md", markdown(doc))
