"""Text per second: the payoff of a grafted vocabulary in the unit a user feels.

Tokens per second alone flatters nothing and compares nothing across vocabularies: a grafted model's token holds
more Persian text. So generation and scoring report characters per second and characters per token beside tokens
per second, the characters counted from the decoded text (what a user reads, stop strings cut), and the share of
generated ids that are new-vocabulary tokens (how much of the output the graft actually wrote).
"""

from __future__ import annotations

from pathlib import Path


def new_token_ids(model_path: str | Path) -> frozenset[int]:
    """The ids `extend` added, read from the model folder's new_tokens.json (empty for a base or a control)."""
    from langgraft.formats.new_tokens import NAME, read_new_tokens

    if not (Path(model_path) / NAME).is_file():
        return frozenset()
    return frozenset(t["id"] for t in read_new_tokens(model_path, flag="model")["tokens"])


def rates(chars: int, tokens: int, seconds: float) -> dict:
    """{chars, tokens, seconds, chars_per_s, tokens_per_s, chars_per_token} of one measured span."""
    s = max(seconds, 1e-9)
    return {"chars": chars, "tokens": tokens, "seconds": round(seconds, 4), "chars_per_s": round(chars / s, 2),
            "tokens_per_s": round(tokens / s, 2), "chars_per_token": round(chars / tokens, 4) if tokens else None}


def generation_speed(outputs: list[dict], seconds: float, new_ids: frozenset[int] = frozenset()) -> dict:
    """Rates of `generate_texts` outputs (each with "text" and "ids") over `seconds`, and the new-token share."""
    ids = [i for o in outputs for i in o["ids"]]
    out = rates(sum(len(o["text"]) for o in outputs), len(ids), seconds)
    out["new_vocab_share"] = round(sum(i in new_ids for i in ids) / len(ids), 4) if ids else None
    return out


def speed_line(speed: dict) -> str:
    cpt = speed.get("chars_per_token")
    share = speed.get("new_vocab_share")
    return (f"{speed['chars_per_s']:,.1f} characters/s, {speed['tokens_per_s']:,.1f} tokens/s"
            + (f", {cpt:.2f} characters/token" if cpt is not None else "")
            + (f", {100 * share:.0f}% new-vocabulary ids" if share is not None else ""))


def speed_rows(doc: dict) -> list[tuple[str, str, str, str, dict]]:
    """(lang, task, kind, model, speed) for every measured task of a results.json document, in its order."""
    out = []
    for task, meta in doc["tasks"].items():
        for model in doc["models"]:
            speed = doc.get("speed", {}).get(model, {}).get(task)
            if speed:
                out.append((meta["lang"], task, "scoring" if meta["kind"] == "intrinsic" else "generation", model,
                            speed))
    return out


def speed_markdown(doc: dict) -> list[str]:
    """report.md's section: text per second of every model on every scoring and generation task."""
    rows = speed_rows(doc)
    if not rows:
        return []
    lines = ["## Text per second", "",
             "Characters counted from the text (scoring: the evaluated text; generation: the decoded output, stop "
             "strings cut). Timings share the machine with whatever else ran: compare models within one run.", "",
             "| task | lang | mode | model | characters/s | tokens/s | characters/token | new-vocabulary ids |",
             "|---|---|---|---|---|---|---|---|"]
    for lang, task, kind, model, s in rows:
        cpt, share = s.get("chars_per_token"), s.get("new_vocab_share")
        lines.append(f"| {task} | {lang} | {kind} | {model} | {s['chars_per_s']:,.1f} | {s['tokens_per_s']:,.1f} | "
                     f"{'n/a' if cpt is None else f'{cpt:.2f}'} | "
                     f"{'—' if share is None else f'{100 * share:.0f}%'} |")
    return lines + [""]


def speed_summary_lines(doc: dict) -> list[str]:
    """One line per (task, mode): each model's characters per second (and the new-vocabulary share)."""
    per: dict[tuple[str, str, str], list[str]] = {}
    for lang, task, kind, model, s in speed_rows(doc):
        share = s.get("new_vocab_share")
        extra = f" ({100 * share:.0f}% new ids)" if share else ""
        per.setdefault((lang, task, kind), []).append(f"{model} {s['chars_per_s']:,.1f}{extra}")
    return [f"{lang} text per second, {kind} ({task}), characters/s: {' → '.join(parts)}"
            for (lang, task, kind), parts in per.items()]
