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
from langgraft.eval.merge import merge_evals
from langgraft.eval.speed import speed_summary_lines
from langgraft.formats.summary_json import write_summary
from langgraft.rundir import atomic_write_text


def write_run_report(out: Path, config: dict) -> dict:
    """Write the report folder `out` from `config` (evals, texts, tokenizers, lang, training); returns the summary's
    lines."""
    doc = merge_evals(config["evals"], out / "eval")
    summary = {"stages": list(doc["models"]), "tokenizer": {}, "intrinsic": {}, "classification": {},
               "generation": {}}
    if config["texts"]:
        summary["tokenizer"] = _tokenizer_summary(out / "tokenizer", config)
    for task, meta in doc["tasks"].items():
        kind = {"intrinsic": "intrinsic", "choice": "classification", "generate": "generation"}.get(meta["kind"])
        if kind is None:
            continue
        metric = meta["metrics"][0]
        values = {m: doc["results"][m][task][metric]["value"] for m in doc["models"] if task in doc["results"][m]}
        entry = {"metric": metric, "values": values, "n": meta["n"]}
        if "chance" in meta:
            entry["chance"] = meta["chance"]
        if metric in meta.get("floors", {}):
            entry["floor"] = meta["floors"][metric]["floor"]
        summary[kind].setdefault(meta["lang"], {})[task] = entry
    summary["arm"] = config.get("arm", "method")
    summary["training"] = training_summary(config.get("runs", {}))
    summary["lines"] = summary_lines(summary, config["lang"]) + speed_summary_lines(doc)
    summary["training_charts"] = _training_charts(out / "training", config.get("training", {}))
    write_summary(out, summary)
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
    from langgraft.tokenizer.report import metrics_json, tokenizer_report

    metrics = metrics_json(tokenizer_report(config["tokenizers"], config["texts"], out=out).path)
    result = {"fertility": {lang: {name: m["fertility"] for name, m in per.items()}
                            for lang, per in metrics["results"].items()}, "unchanged": {}}
    if "extended" not in config["tokenizers"]:  # the control arm: the base tokenizer alone
        return result
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
            lines.append(f"{text_lang} fertility (tokens/word): base {per['base']:.2f}"
                         + (f" → extended {per['extended']:.2f}" if "extended" in per else " (base tokenizer)"))
    for stage, t in summary.get("training", {}).items():
        seen = f", {t['chars_seen']:,} {t['lang']} characters seen" if t.get("chars_seen") is not None else ""
        lines.append(f"{stage} ({summary.get('arm', 'method')}): {t['tokens']:,} training tokens{seen}, "
                     f"{t['seconds']:,.1f} s")
    for text_lang, c in tok.get("unchanged", {}).items():
        lines.append(f"{text_lang} ids unchanged by the extended tokenizer: {c['identical']}/{c['lines']} lines")
    for kind in ("intrinsic", "classification", "generation"):
        for task_lang, tasks in summary.get(kind, {}).items():
            for task, entry in tasks.items():
                metric = entry["metric"]
                arrow = " → ".join(f"{m} {fmt(metric, v, unit=True)}" for m, v in entry["values"].items())
                context = f" (n={entry['n']}, chance {100 * entry['chance']:.0f}%)" if "chance" in entry else ""
                if "floor" in entry:
                    below = [m for m, v in entry["values"].items() if not v > entry["floor"]]
                    context = f" (n={entry['n']}, floor {fmt(metric, entry['floor'], unit=True)})"
                    arrow += f"; not above the floor: {', '.join(below)}" if below else ""
                lines.append(f"{task} {metric}{context}: {arrow}")
    return lines


def training_summary(runs: dict[str, str]) -> dict[str, dict]:
    """Per training stage: tokens trained on, characters of text they carry (tokens × the training data's
    characters per token; repeats counted, as the tokens are), the dataset's language and the run's wall time."""
    from langgraft.data.load import dataset_info
    from langgraft.rundir import read_manifest

    out = {}
    for stage, run in runs.items():
        manifest = read_manifest(Path(run))
        if manifest is None:
            continue
        s = manifest["summary"]
        dataset = manifest["config"]["data"]["dataset"]
        per_token = s["train_chars"] / s["train_tokens"] if s.get("train_chars") and s.get("train_tokens") else None
        out[stage] = {"tokens": s["tokens"], "seconds": manifest.get("wall_time_s", 0.0),
                      "dataset": Path(dataset).name, "lang": dataset_info(dataset).get("lang", "?"),
                      "chars_seen": round(s["tokens"] * per_token) if per_token else None}
    return out


def training_chart(metrics: Path, path: Path, title: str) -> bool:
    """Training loss (and validation loss where it was measured) against the step, and the learning rate of each
    parameter group, from a training run's metrics.jsonl; False when it holds nothing to draw."""
    from langgraft.rundir.training import read_metrics

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
