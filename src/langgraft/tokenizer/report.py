"""`langgraft tokenizer report`: tokenizer × text metrics as JSON, a Markdown table and a bar chart.

With `sweep` it also answers the paper's open question of how many tokens to add: for each vocabulary size it
trains a SentencePiece model on `sweep_train`, merges it into the `sweep_base` tokenizer and tabulates
size → new tokens added → fertility on every text (plus the Persian-only model's own fertility and, on texts in
other languages, the share of lines whose ids stayed identical to the base's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from langgraft.config import PosInt, from_dict, to_dict
from langgraft.data.load import prepared_split
from langgraft.errors import UserError
from langgraft.options import option, settings as settings_of
from langgraft.rundir import StageResult
from langgraft.tokenizer import metrics

COLUMNS = [("fertility", "tokens/word", "{:.3f}"), ("chars_per_token", "chars/token", "{:.3f}"),
           ("bytes_per_token", "bytes/token", "{:.3f}"), ("byte_fallback_rate", "byte-fallback", "{:.2%}"),
           ("unknown_rate", "unknown", "{:.2%}"), ("tokens", "tokens", "{:,}")]


@dataclass
class ReportOptions:
    """What `tokenizer report` may be told beyond its tokenizers, texts and output: the source of its flags."""

    normalize: bool = False  # apply each text's language normaliser first
    # also train + merge a vocabulary of each size and tabulate fertility
    sweep: list[PosInt] = option(factory=list, metavar="N")
    sweep_base: Optional[str] = option(None, metavar="NAME")  # --tokenizer to extend (default: first)
    # training text for --sweep (files or dataset DIR[:SPLIT], as tokenizer train --input)
    sweep_train: list[str] = option(factory=list, metavar="FILE")
    lang: Optional[str] = None  # language of the new pieces for --sweep, e.g. fa


def tokenizer_report(tokenizers: dict[str, str], texts: dict[str, str], *, out: str | Path,
                     opts: ReportOptions | None = None, force: bool = False, **settings: Any) -> StageResult:
    """Measure every tokenizer on every text and write report.json, report.md and fertility.png into `out`.
    `settings`: fields of `ReportOptions`, over `opts`."""
    from langgraft.rundir import run_stage

    opts = from_dict(ReportOptions, {**to_dict(opts or ReportOptions()), **settings}, source="tokenizer report")
    normalize, sweep, sweep_base, sweep_train, lang = (opts.normalize, opts.sweep, opts.sweep_base,
                                                       opts.sweep_train, opts.lang)

    for name, path in tokenizers.items():
        if not Path(path).exists():
            raise UserError(f"--tokenizer {name}={path}: not found")
    for label, path in texts.items():
        if prepared_split(path, "validation") is None and not Path(path).is_file():
            raise UserError(f"--text {label}={path}: file not found (nor a prepared dataset folder)")
    if sweep:
        _check_sweep(tokenizers, sweep, sweep_base, sweep_train, lang)
        sweep_base = sweep_base or next(iter(tokenizers))
    loaded = {name: _load(name, path) for name, path in tokenizers.items()}
    read = {label: _text_lines(label, path, normalize) for label, path in texts.items()}
    lines = {label: text for label, (text, _) in read.items()}
    config = {"tokenizers": tokenizers, "texts": texts, **settings_of(opts), "sweep_base": sweep_base}

    def work(tmp: Path) -> dict:
        results = {label: {name: metrics.measure(tok, text) for name, tok in loaded.items()}
                   for label, text in lines.items()}
        report = {"texts": {label: {"file": texts[label], "lines": len(text), "normalized_lines_changed": changed}
                            for label, (text, changed) in read.items()},
                  "tokenizers": {name: {"path": path, "vocab_size": loaded[name].get_vocab_size()}
                                 for name, path in tokenizers.items()},
                  "normalize": normalize, "results": results, "sweep": []}
        if sweep:
            report["sweep"] = _run_sweep(tmp / "sweep", sweep, lines, base_path=tokenizers[sweep_base],
                                         base_tok=loaded[sweep_base], train_files=sweep_train, lang=lang)
            report["sweep_base"] = sweep_base
        _write_outputs(tmp, report)
        return {"texts": len(texts), "tokenizers": len(tokenizers), "sweep_sizes": list(sweep)}

    files = [*tokenizers.values(), *texts.values(), *sweep_train]
    return run_stage(out, stage="tokenizer-report", config=config, work=work, force=force,
                     inputs=[(prepared_split(f, "validation") or (f,))[0] for f in files])


def metrics_json(out: Path) -> dict:
    import json

    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _check_sweep(tokenizers, sweep, sweep_base, sweep_train, lang) -> None:
    if sweep_base is not None and sweep_base not in tokenizers:
        raise UserError(f"--sweep-base {sweep_base}: not one of the --tokenizer names ({', '.join(tokenizers)})")
    if not sweep_train:
        raise UserError("--sweep needs --sweep-train FILE... (the text to train each vocabulary on)")
    if not lang:
        raise UserError("--sweep needs --lang (the language the new pieces are for, e.g. fa)")
    for path in sweep_train:
        if prepared_split(path, "train") is None and not Path(path).is_file():
            raise UserError(f"--sweep-train {path}: file not found (nor a prepared dataset folder)")
    for size in sweep:
        if size <= 0:
            raise UserError(f"--sweep {size}: vocabulary sizes must be positive")


def _load(name: str, path: str):
    try:
        return metrics.load_tokenizer(path)
    except UserError as exc:  # name the flag this report was given, not the loader's own (--base) wording
        reason = re.sub(r"^--base \S+: ", "", str(exc))
        raise UserError(f"--tokenizer {name}={path}: {reason}") from None


def _text_lines(label: str, path: str, normalize: bool) -> tuple[list[str], int]:
    """The text's lines (normalised with `label`'s language when asked) and how many lines normalising changed."""
    lines = metrics.read_lines(path)
    if not normalize:
        return lines, 0
    from langgraft.lang import get_language

    try:
        lang = get_language(label)
    except UserError as exc:
        raise UserError(f"--text {label}={path}: --normalize needs a language code as the name ({exc})") from None
    normalized = [lang.normalize(line) for line in lines]
    return normalized, sum(a != b for a, b in zip(lines, normalized))


def _run_sweep(root: Path, sizes, lines, *, base_path: str, base_tok, train_files, lang) -> list[dict]:
    """Train + merge one vocabulary per size; rows of size → added tokens → fertility per text."""
    import time

    from langgraft.tokenizer.extend import extend_tokenizer
    from langgraft.tokenizer.train import train_tokenizer

    rows = []
    for size in sizes:
        started = time.perf_counter()
        trained = train_tokenizer(list(train_files), lang=lang, vocab_size=size, out=root / f"sp-{size}")
        ext_dir = root / f"extended-{size}"
        merged = extend_tokenizer(base_path, trained.path / "sp.model", lang=lang, out=ext_dir)
        seconds = time.perf_counter() - started
        extended = metrics.load_tokenizer(ext_dir)
        own = metrics.load_tokenizer(trained.path / "sp.model")
        row = {"size": size, "added": merged["added"], "vocab_size": merged["vocab_size"],
               "train_merge_s": round(seconds, 2), "fertility": {}, "sp_only_fertility": {}, "unchanged": {}}
        for label, text in lines.items():
            row["fertility"][label] = metrics.measure(extended, text)["fertility"]
            row["sp_only_fertility"][label] = metrics.measure(own, text)["fertility"]
            if label.split("-")[0] != lang:  # other-language text must keep the base's ids
                row["unchanged"][label] = metrics.unchanged(base_tok, extended, text)["fraction"]
        print(f"sweep {size}: +{merged['added']} tokens, {seconds:.1f}s, fertility "
              + ", ".join(f"{k}={v:.3f}" for k, v in row["fertility"].items()), flush=True)
        rows.append(row)
    return rows


def _write_outputs(tmp: Path, report: dict) -> None:
    from langgraft.rundir import atomic_write_text, write_json

    write_json(tmp / "report.json", report)
    atomic_write_text(tmp / "report.md", render_markdown(report))
    _bar_chart(report, tmp / "fertility.png")
    if report["sweep"]:
        _sweep_chart(report, tmp / "sweep.png")


def render_markdown(report: dict) -> str:
    out = ["# Tokenizer report", ""]
    for label, by_tok in report["results"].items():
        info = report["texts"][label]
        out += [f"## {label} — `{info['file']}` ({info['lines']:,} lines)", "",
                "| tokenizer | kind | vocab | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
                "|---|---|---:|" + "---:|" * len(COLUMNS)]
        for name, m in by_tok.items():
            cells = [fmt.format(m[key]) for key, _, fmt in COLUMNS]
            vocab = report["tokenizers"][name]["vocab_size"]
            out.append(f"| {name} | {m['kind']} | {vocab:,} | " + " | ".join(cells) + " |")
        out.append("")
    if report["sweep"]:
        labels = list(report["results"])
        out += [f"## Sweep: vocabulary size → tokens added to `{report['sweep_base']}` → fertility", "",
                "| size | added | vocab | train+merge s | "
                + " | ".join(f"{lb} ext. | {lb} SP-only" for lb in labels) + " | unchanged lines |",
                "|" + "---:|" * (4 + 2 * len(labels)) + "---|"]
        for row in report["sweep"]:
            cells = [f"{row['fertility'][lb]:.3f} | {row['sp_only_fertility'][lb]:.3f}" for lb in labels]
            same = ", ".join(f"{lb} {v:.2%}" for lb, v in row["unchanged"].items()) or "—"
            out.append(f"| {row['size']:,} | {row['added']:,} | {row['vocab_size']:,} | {row['train_merge_s']} | "
                       + " | ".join(cells) + f" | {same} |")
        out.append("")
    return "\n".join(out)


def _bar_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["results"])
    names = list(report["tokenizers"])
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) * max(len(names), 2) / 2), 4))
    for i, name in enumerate(names):
        values = [report["results"][lb][name]["fertility"] for lb in labels]
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel("tokens per word (fertility)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _sweep_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["sweep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in report["results"]:
        ax.plot([r["size"] for r in rows], [r["fertility"][label] for r in rows], marker="o", label=label)
    ax.set_xlabel("SentencePiece vocabulary size")
    ax.set_ylabel(f"fertility of extended {report['sweep_base']}")
    ax.set_ylim(bottom=0)  # from zero: the drop between sizes is read against the whole
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
