"""The last stage of `langgraft run`: one report of how both languages moved, stage by stage.

Each part is drawn by the verb that owns it (eval's tables and charts by `eval.report`, the tokenizer table by
`tokenizer.report`); this module gathers them and adds what only a run has: the training charts and the summary.

Writes into the report folder: `eval/` (`langgraft eval --compare` of every evaluated stage: report.md with CIs
and paired tests against the base, charts), `tokenizer/` (`langgraft tokenizer report`: fertility, chars per
token, byte fallback of the base and extended tokenizers on held-out text), `training/STAGE.png` (each training
stage's train and validation loss and learning rates, from its metrics.jsonl), and `summary.json` / `summary.md`:
the few numbers a reader wants first (Persian fertility before/after, English ids unchanged, bits per character
and accuracy per stage).
"""

from __future__ import annotations

from pathlib import Path

from langgraft.eval.metrics import fmt
from langgraft.eval.run import merge_evals
from langgraft.rundir import atomic_write_text, write_json


def write_run_report(out: Path, config: dict) -> dict:
    """Write the report folder `out` from `config` (evals, texts, tokenizers, lang, training); returns the summary's
    lines."""
    doc = merge_evals(config["evals"], out / "eval")
    summary = {"stages": list(doc["models"]), "tokenizer": {}, "intrinsic": {}, "classification": {}}
    if config["texts"]:
        summary["tokenizer"] = _tokenizer_summary(out / "tokenizer", config)
    for task, meta in doc["tasks"].items():
        kind = {"intrinsic": "intrinsic", "choice": "classification"}.get(meta["kind"])
        if kind is None:
            continue
        metric = meta["metrics"][0]
        values = {m: doc["results"][m][task][metric]["value"] for m in doc["models"] if task in doc["results"][m]}
        entry = {"metric": metric, "values": values, "n": meta["n"]}
        if "chance" in meta:
            entry["chance"] = meta["chance"]
        summary[kind].setdefault(meta["lang"], {})[task] = entry
    summary["lines"] = summary_lines(summary, config["lang"])
    summary["training_charts"] = _training_charts(out / "training", config.get("training", {}))
    write_json(out / "summary.json", summary)
    charts = "".join(f"\n![{stage} training](training/{stage}.png)\n" for stage in summary["training_charts"])
    atomic_write_text(out / "summary.md", "# Pipeline summary\n\n" + "\n".join(f"- {line}" for line in
                      summary["lines"]) + "\n\nDetails: [eval/report.md](eval/report.md)"
                      + (", [tokenizer/report.md](tokenizer/report.md)\n" if config["texts"] else "\n") + charts)
    return {"lines": summary["lines"]}


def _training_charts(out: Path, metrics: dict[str, str]) -> list[str]:
    """training/STAGE.png for every training stage that logged metrics; the stages drawn."""
    out.mkdir(parents=True, exist_ok=True)
    return [stage for stage, path in metrics.items()
            if Path(path).is_file() and training_chart(Path(path), out / f"{stage}.png", f"{stage} training")]


def _tokenizer_summary(out: Path, config: dict) -> dict:
    from langgraft.tokenizer.metrics import load_tokenizer, read_lines, unchanged
    from langgraft.tokenizer.report import tokenizer_report

    metrics = tokenizer_report(config["tokenizers"], config["texts"], out=out)
    result = {"fertility": {lang: {name: m["fertility"] for name, m in per.items()}
                            for lang, per in metrics["results"].items()}, "unchanged": {}}
    base, ext = (load_tokenizer(config["tokenizers"][k]) for k in ("base", "extended"))
    for lang, path in config["texts"].items():
        if lang != config["lang"]:  # the identity guarantee covers text without target-script characters
            check = unchanged(base, ext, read_lines(path))
            result["unchanged"][lang] = {"identical": check["identical"], "lines": check["lines"]}
    return result


def summary_lines(summary: dict, lang: str) -> list[str]:
    """Short human lines: tokenizer first, then each language's headline numbers across the stages."""
    lines = []
    tok = summary["tokenizer"]
    for text_lang, per in tok.get("fertility", {}).items():
        if text_lang == lang:
            lines.append(f"{text_lang} fertility (tokens/word): base {per['base']:.2f} → extended "
                         f"{per['extended']:.2f}")
    for text_lang, c in tok.get("unchanged", {}).items():
        lines.append(f"{text_lang} ids unchanged by the extended tokenizer: {c['identical']}/{c['lines']} lines")
    for kind in ("intrinsic", "classification"):
        for task_lang, tasks in summary[kind].items():
            for task, entry in tasks.items():
                arrow = " → ".join(f"{m} {fmt(entry['metric'], v, unit=True)}" for m, v in entry["values"].items())
                context = f" (n={entry['n']}, chance {100 * entry['chance']:.0f}%)" if "chance" in entry else ""
                lines.append(f"{task} {entry['metric']}{context}: {arrow}")
    return lines


def training_chart(metrics: Path, path: Path, title: str) -> bool:
    """Training loss (and validation loss where it was measured) against the step, and the learning rate of each
    parameter group, from a training run's metrics.jsonl; False when it holds nothing to draw."""
    from langgraft.train.loop import read_metrics

    rows = read_metrics(metrics)
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    lrs = [(r["step"], r["lr"]) for r in rows if r.get("lr")]
    if not train and not val:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    if train:
        left.plot(*zip(*train), label="train loss", lw=1)
    if val:
        left.plot(*zip(*val), "o-", label="validation loss", ms=4)
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss (nats per token)")
    left.set_ylim(bottom=0)
    left.legend(fontsize="small")
    names = ["embedding/head rows", "LoRA adapters"]  # the optimizer's parameter groups, in its order
    for g in range(len(lrs[0][1]) if lrs else 0):
        right.plot([s for s, _ in lrs], [lr[g] for _, lr in lrs], label=names[g] if g < 2 else f"group {g}")
    right.set_xlabel("optimizer step")
    right.set_ylabel("learning rate")
    right.set_ylim(bottom=0)
    if lrs:
        right.legend(fontsize="small")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
