"""`langgraft generate --model PATH --input IN.jsonl --out OUT.jsonl`: generate for a file of prompts.

Each input line is a JSON object whose `--field` (default `prompt`) holds the prompt text, or with `--chat` a
chat: a list of {"role", "content"} messages (or a string, one user turn) rendered through the model's chat
template. Output line k answers input line k: {"line", "output", "new_tokens", "truncated_tokens"} (plus the
input's "id" when it has one); a line that cannot be used (not JSON, field missing or of the wrong type, chat the
template rejects) gets {"line", "skipped": reason, "error"} instead, and the skips are counted by reason at the
end. `--strict` stops at the first such line (exit 2) instead.

Prompts are generated in windows of input lines, each sorted by length into batches with a KV cache (left
padding; in fp32 greedy output does not depend on the batch), and a window's lines are appended in input order and
flushed to disk before the next one starts. So the output is always a prefix of the finished file: a rerun
with the same settings resumes after the last complete line (a torn last line from a kill is cut off), and a
rerun with other settings is refused rather than mixing two runs in one file. With `--seed`, each window samples
from seed + its first line number, so a resumed file matches an uninterrupted one. One process writes a file at a
time (the stages' lock, `.OUT.lock`); a start that fails before its first line leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field as dataclass_field, replace
from pathlib import Path

from langgraft.errors import UserError
from langgraft.config import PosInt
from langgraft.model.generation import Loading, Sampling
from langgraft.outfiles import open_output
from langgraft.rundir import check_out
from langgraft.textfiles import check_unicode, iter_lines, read_json_object


@dataclass
class GenerateOptions:
    """What `generate` may be told beyond its model, input, output and sampling: the source of its flags."""

    field: str = "prompt"  # the input field with the prompt
    # the field is a chat (list of {role, content}, or a string: one user turn), sent through the model's chat
    # template
    chat: bool = False
    batch_size: PosInt = 16  # prompts generated together (KV cache, left padding)
    strict: bool = False  # stop at the first unusable input line (default: skip it and count it)
    load: Loading = dataclass_field(default_factory=Loading)


def read_inputs(path: Path, opts: GenerateOptions) -> list[tuple[dict | None, object, str]]:
    """(record, field value, "") per input line, or (None, None, "reason: message") for an unusable line."""
    if not path.is_file():
        raise UserError(f"--input {path}: no such file")
    return [_parse(line, n, path, opts) for line, n in iter_lines(path)]


def _parse(line: str, n: int, path: Path, opts: GenerateOptions) -> tuple[dict | None, object, str]:
    where = f"--input {path}:{n}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return _bad(f"not_json: {where}: not JSON ({exc.msg})", opts)
    if not isinstance(record, dict):
        return _bad(f"not_an_object: {where}: a JSON {type(record).__name__}, not an object", opts)
    if opts.field not in record:
        return _bad(f"missing_field: {where}: no field {opts.field!r}", opts)
    value = record[opts.field]
    if opts.chat and isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if opts.chat and not (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value)):
        return _bad(f"bad_field: {where}: field {opts.field!r} is not a list of {{role, content}} messages", opts)
    if not opts.chat and not (isinstance(value, str) and value.strip()):
        return _bad(f"bad_field: {where}: field {opts.field!r} is not a non-empty string", opts)
    try:
        for text in [m["content"] for m in value] if opts.chat else [value]:
            check_unicode(text, f"{where}: field {opts.field!r}")
    except UserError as exc:
        return _bad(f"bad_text: {exc}", opts)
    return record, value, ""


def _bad(why: str, opts: GenerateOptions) -> tuple[None, None, str]:
    if opts.strict:
        raise UserError(why.split(": ", 1)[1] + " (--strict)")
    return None, None, why


def resume_point(out: Path, settings: dict) -> int:
    """Complete lines already in `out` (a torn last line is cut off); refuses a file from other settings."""
    meta = out.with_name(out.name + ".settings.json")
    if out.is_symlink():
        raise UserError(f"--out {out}: is a symbolic link; langgraft never writes through a link (pick another "
                        "--out)")
    if not out.exists():
        if meta.exists() or meta.is_symlink():  # left by a start that wrote no line yet: ours only
            _check_settings_file(meta, settings)
            meta.unlink()
        return 0
    if not meta.is_file():
        raise UserError(f"--out {out}: exists and was not written by `langgraft generate`; pick another --out")
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == 0:  # not one complete line yet (a start that failed or was killed): nothing to resume or keep
        out.write_bytes(b"")
        return 0
    saved = read_json_object(meta)
    for key in settings:
        if saved.get(key) != settings[key]:
            raise UserError(f"--out {out}: started with other settings ({key}: {saved.get(key)!r} → "
                            f"{settings[key]!r}); rerun with the same ones to resume, or pick another --out")
    if keep < len(data):  # a write cut short by a kill: that line is generated again
        with open_output(out, "r+b") as fh:
            fh.truncate(keep)
    return data[:keep].count(b"\n")


def _check_settings_file(meta: Path, settings: dict) -> None:
    """`meta` is a settings file `generate` wrote (a plain file holding exactly the settings' keys), not a file
    of the user's that happens to carry the name."""
    try:
        saved = None if meta.is_symlink() else json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        saved = None
    if not isinstance(saved, dict) or saved.keys() != settings.keys():
        raise UserError(f"--out {meta.with_name(meta.name[:-len('.settings.json')])}: {meta} exists and was not "
                        "written by `langgraft generate`; pick another --out")


def run_generate(model_path: str, input_path: str, out_path: str, sampling: Sampling, opts: GenerateOptions,
                 progress: bool | None = None) -> dict:
    """Generate for every remaining input line; returns the counts (written, skipped by reason, truncated).
    Under a launcher every rank generates a share of each window's prompts and rank 0 writes the file."""
    from langgraft.eval.shard import launch_group
    from langgraft.rundir import output_lock

    inp, out = Path(input_path), Path(out_path)
    if out.resolve() == inp.resolve():
        raise UserError(f"--out {out}: is the input file")
    check_out(out)  # never the working directory, $HOME or /, nor a path the command reads
    if opts.batch_size < 1:
        raise UserError(f"--batch-size: must be ≥ 1, got {opts.batch_size}")
    items = read_inputs(inp, opts)
    group = launch_group()
    if not group.main:
        return _follow(model_path, items, sampling, opts, group)
    try:
        with output_lock(out):  # one writer per file: a second run would append every line again
            created = not out.exists()
            try:
                counts = _generate(model_path, (inp, out), items, sampling, opts, progress, group=group)
            except BaseException:
                # a start that failed before its first line leaves nothing that would block the corrected command
                if created and out.is_file() and out.stat().st_size == 0:
                    out.unlink()
                    out.with_name(out.name + ".settings.json").unlink(missing_ok=True)
                raise
    except Exception as exc:
        group.tell(("error", str(exc)))  # the other ranks stop with the same line instead of waiting
        raise
    group.tell(("done", counts))
    return counts


def _follow(model_path: str, items: list, sampling: Sampling, opts: GenerateOptions, group) -> dict:
    """A rank > 0 of a launch: generate its share of every window rank 0 generates; rank 0's counts."""
    message = group.hear()
    if message[0] == "start":
        from langgraft.model.load import load_model_or_adapter

        done = message[1]
        model, tok = load_model_or_adapter(model_path, opts.load.device, opts.load.base)
        items = items[:done] + [_render(tok, item, opts, f"line {k + 1}") for k, item in enumerate(items[done:], done)]
        for _ in _windows(model, tok, items, done, sampling=sampling, opts=opts, tick=lambda n, t: None, outputs=[],
                          group=group):
            pass
        message = group.hear()
    if message[0] == "error":
        raise UserError(message[1])
    return message[1]


def _generate(model_path: str, paths: tuple[Path, Path], items: list, sampling: Sampling, opts: GenerateOptions,
              progress: bool | None, *, group) -> dict:
    from tqdm import tqdm

    from langgraft.model.load import load_model_or_adapter

    inp, out = paths
    settings = {"model": model_path, "base": opts.load.base, "input": str(inp.resolve()), "field": opts.field,
                "chat": opts.chat, **{f"--{k.replace('_', '-')}": v for k, v in asdict(sampling).items()}}
    done = resume_point(out, settings)
    if done > len(items):
        raise UserError(f"--out {out}: has {done} lines but --input {inp} only {len(items)}; pick another --out")
    counts = {"lines": len(items), "resumed_at": done, "written": 0, "skipped": Counter(), "truncated": 0,
              "speed": None}
    if done < len(items):
        from langgraft.eval.speed import new_token_ids

        group.tell(("start", done))
        model, tok = load_model_or_adapter(model_path, opts.load.device, opts.load.base)
        outputs: list[dict] = []  # this run's generations: the text per second of what it generated
        new_ids = new_token_ids(model_path) if Path(model_path, "config.json").is_file() else frozenset()
        items = items[:done] + [_render(tok, item, opts, f"--input {inp}:{k + 1}")
                                for k, item in enumerate(items[done:], done)]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open_output(out.with_name(out.name + ".settings.json"), "w") as fh:
            fh.write(json.dumps(settings, ensure_ascii=False))
        # progress None: a bar on terminals only (quiet in logs and tests)
        bar = tqdm(total=len(items), initial=done, unit="line", dynamic_ncols=True,
                   disable=None if progress is None else not progress)
        seconds = 0.0
        with open_output(out, "a") as fh:
            clock = time.perf_counter()
            for lines in _windows(model, tok, items, done, sampling=sampling, opts=opts, tick=_ticker(bar),
                                  outputs=outputs, group=group):
                seconds += time.perf_counter() - clock
                fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
                fh.flush()
                os.fsync(fh.fileno())
                counts["written"] += len(lines)
                counts["truncated"] += sum(bool(r.get("truncated_tokens")) for r in lines)
                clock = time.perf_counter()
        bar.close()
        if outputs:
            from langgraft.eval.speed import generation_speed

            counts["speed"] = generation_speed(outputs, seconds, new_ids)
    counts["skipped"] = _skips(out)
    return counts


def _windows(model, tok, items: list, done: int, **kwargs):
    """The output records of each window of input lines from line `done` on (windows at fixed line numbers)."""
    window = kwargs["opts"].batch_size * 8
    start = done
    while start < len(items):
        end = min((start // window + 1) * window, len(items))
        yield _window(model, tok, items, (start, end), **kwargs)
        start = end


def _render(tok, item: tuple, opts: GenerateOptions, where: str) -> tuple:
    """The item with its field value turned into the prompt text (a chat through the template)."""
    record, value, why = item
    if why or not opts.chat:
        return item
    from jinja2 import TemplateError

    from langgraft.model.load import chat_text

    try:
        return record, chat_text(tok, value), ""
    except (TemplateError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else "rejected"
        return _bad(f"chat_template_rejected: {where}: the chat template rejects this chat ({message})", opts)


def _ticker(bar):
    """`on_batch` for generate_texts: advance the bar and show new tokens per second since the run began."""
    import time

    state = {"started": time.perf_counter(), "tokens": 0}

    def tick(n: int, new_tokens: int) -> None:
        state["tokens"] += new_tokens
        bar.update(n)
        bar.set_postfix(tok_s=f"{state['tokens'] / max(time.perf_counter() - state['started'], 1e-9):,.1f}")

    return tick


def _window(model, tok, items, span: tuple[int, int], *, sampling: Sampling, opts: GenerateOptions,
            tick, outputs: list[dict], group) -> list[dict]:
    """Output records of input lines span = [start, end) (0-based), in order; the generations are appended to
    `outputs` too (text and ids, for the rates). Under a launch each rank generates every N-th prompt."""
    from langgraft.model.generation import generate_texts

    rows: list[dict] = []
    todo: list[tuple[int, str]] = []
    for k in range(*span):
        record, prompt, why = items[k]
        if why:
            reason, _, message = why.partition(": ")
            rows.append({"line": k + 1, "skipped": reason, "error": message})
            continue
        rows.append({"line": k + 1, **({"id": record["id"]} if "id" in record else {})})
        todo.append((len(rows) - 1, prompt))
    seeded = replace(sampling, seed=sampling.seed + span[0]) if sampling.seed is not None else sampling
    # under a launch the bar moves once the window is gathered (a rank's own ticks count only its share)
    own_tick = tick if group.size == 1 else (lambda n, new_tokens: None)
    results = group.map(lambda part: generate_texts(model, tok, part, seeded, opts.batch_size, own_tick)
                        if part else [], [p for _, p in todo])
    if group.size > 1:
        tick(len(results), sum(r["new_tokens"] for r in results))
    outputs += results
    for (r, _), res in zip(todo, results):
        rows[r].update(output=res["text"], new_tokens=res["new_tokens"], truncated_tokens=res["truncated_tokens"])
    tick(len(rows) - len(todo), 0)
    return rows


def _skips(out: Path) -> Counter:
    skipped: Counter = Counter()
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            reason = json.loads(line).get("skipped")
            if reason:
                skipped[reason] += 1
    return skipped


def summary_line(out: str, counts: dict) -> str:
    if counts["resumed_at"] == counts["lines"]:
        parts = [f"{out}: up to date ({counts['lines']} lines), nothing to generate"]
    else:
        parts = [f"wrote {out}: {counts['lines']} lines ({counts['written']} written now"
                 + (f", resumed after line {counts['resumed_at']}" if counts["resumed_at"] else "") + ")"]
    if counts["skipped"]:
        parts.append("skipped " + ", ".join(f"{k} {v}" for k, v in sorted(counts["skipped"].items())))
    if counts.get("speed"):
        from langgraft.eval.speed import speed_line

        s = counts["speed"]
        parts.append(f"generated {s['tokens']:,} tokens, {s['chars']:,} characters in {s['seconds']:.2f} s: "
                     + speed_line(s))
    if counts["truncated"]:
        parts.append(f"{counts['truncated']} prompt(s) cut from the left to fit the context (see truncated_tokens)")
    return "; ".join(parts)
