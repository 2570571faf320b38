"""The last stage of `langgraft run`: one report of how both languages moved, stage by stage.

Writes into the report folder: `eval/` (`langgraft eval --compare` of every evaluated stage: report.md with CIs
and paired tests against the base, charts), `tokenizer/` (`langgraft tokenizer report`: fertility, chars per
token, byte fallback of the base and extended tokenizers on held-out text), `training/STAGE.png` (each training
stage's train and validation loss and learning rates, from its metrics.jsonl), and `summary.json` / `summary.md`:
the few numbers a reader wants first (Persian fertility before/after, English ids unchanged, bits per character
and accuracy per stage).
"""

from __future__ import annotations

from pathlib import Path

from langgraft.rundir import atomic_write_text, write_json


def write_report(out: Path, config: dict) -> dict:
    from langgraft.eval.run import merge_evals

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
    from langgraft.report import training_chart

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
                arrow = " → ".join(f"{m} {_fmt(entry['metric'], v)}" for m, v in entry["values"].items())
                context = f" (n={entry['n']}, chance {100 * entry['chance']:.0f}%)" if "chance" in entry else ""
                lines.append(f"{task} {entry['metric']}{context}: {arrow}")
    return lines


def _fmt(metric: str, value: float) -> str:
    return f"{100 * value:.1f}%" if metric in ("acc", "acc_norm", "macro_f1") else f"{value:.3f}"
