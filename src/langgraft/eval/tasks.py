"""Evaluation tasks are data: one YAML per task under `eval/tasks/`, checked against `TaskSpec`.

A task names a dataset file under a data root, how to read it, which record fields fill the prompt template, and
how it is scored (`kind`: choice = log-likelihood of each continuation, generate = greedy decoding, intrinsic =
bits per character of raw text). Suites are the `suites` lists of the shipped tasks plus `all`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from langgraft.config import NonNegInt, PosInt, from_dict
from langgraft.errors import UserError
from langgraft.textfiles import read_text
from langgraft.eval.metrics import CHOICE_METRICS, GENERATE_METRICS, INTRINSIC_METRICS

SUITE_ALL = "all"


@dataclass
class DataSpec:
    path: str = ""  # dataset file relative to the data root (json, jsonl, csv, tsv or text lines); a glob reads
    # every matching file, sorted by name, as one task
    format: Literal["jsonl", "json", "csv", "tsv", "lines", "parallel"] = "jsonl"
    columns: list[str] = field(default_factory=list)  # `lines` format: names of the separated columns
    separator: str = " "  # `lines` format: split each line into len(columns) parts at this separator
    files: dict[str, str] = field(default_factory=dict)  # `parallel` format: column -> line-aligned text file


@dataclass
class TaskSpec:
    name: str  # unique task name (also the samples/ file name)
    lang: str  # language of the task text: fa or en
    kind: Literal["choice", "generate", "intrinsic"]  # how the task is scored
    data: DataSpec  # where the examples come from
    metrics: list[str]  # first one is the task's headline metric
    suites: list[str] = field(default_factory=list)  # suites besides `all` (fa_core, en_core)
    description: str = ""  # one line for the report
    fields: dict[str, str] = field(default_factory=dict)  # template variable -> record path (a.0.b, a.*.1)
    prompt: str = ""  # str.format template over `fields`
    choices: list[str] = field(default_factory=list)  # verbalisers, indexed by the gold label
    choices_field: str = ""  # record path of a per-example list of choices (multiple choice)
    label: str = ""  # record path of the gold label (choice tasks)
    label_map: dict[str, int] = field(default_factory=dict)  # raw label -> choice index; others are skipped
    label_offset: int = 0  # integer labels: gold index = int(label) - label_offset
    target: str = ""  # record path of the reference(s) (generate tasks); a list means several references
    text: str = ""  # record path of the text (intrinsic tasks); a list of strings is joined with newlines
    choice_prefix: str = " "  # put between the prompt and each choice / the generated text
    shots: NonNegInt = 0  # default number of in-context examples (overridden by --shots)
    shots_data: DataSpec | None = None  # where in-context examples come from (default: the other eval examples)
    shot_separator: str = "\n\n"  # between in-context examples
    stop: list[str] = field(default_factory=lambda: ["\n"])  # generation stops at the first of these
    max_new_tokens: PosInt = 32  # generation budget
    max_chars: NonNegInt = 0  # intrinsic: cut each text to this many characters (0 = whole text)
    seed: NonNegInt = 1234  # shot sampling seed (fixed so every model sees the same shots)
    id_field: str = "id"  # record path of the example's own id, kept in samples when every record has a unique one


def tasks_dir() -> Path:
    return Path(str(resources.files("langgraft.eval") / "tasks"))


def shipped_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(tasks_dir().glob("*.yaml"))}


def load_task(path: str | Path) -> TaskSpec:
    """Parse and check one task YAML; any problem is a one-line UserError naming the file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(read_text(path))
    except OSError as exc:
        raise UserError(f"task {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"task {path}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    spec = from_dict(TaskSpec, raw, source=f"task {path}")
    _check(spec, path)
    return spec


def _check(spec: TaskSpec, path: Path) -> None:
    allowed = {"choice": CHOICE_METRICS, "generate": GENERATE_METRICS, "intrinsic": INTRINSIC_METRICS}[spec.kind]
    bad = [m for m in spec.metrics if m not in allowed]
    if bad or not spec.metrics:
        raise UserError(f"task {path}: metrics {bad or '[]'} not valid for kind {spec.kind} "
                        f"(choose from {', '.join(sorted(allowed))})")
    needs = {"choice": ["label"], "generate": ["target", "prompt"], "intrinsic": ["text"]}[spec.kind]
    if spec.kind == "choice":
        needs.append("prompt")
        if not spec.choices and not spec.choices_field:
            raise UserError(f"task {path}: choice task needs `choices` or `choices_field`")
    for key in needs:
        if not getattr(spec, key):
            raise UserError(f"task {path}: missing required key {key} for kind {spec.kind}")
    from langgraft.rundir import check_name, check_relative

    # the name and suites become file names (samples/NAME.jsonl, charts/SUITE.png); a relative data path stays
    # inside the data root, and only a task file of the user's own (not a shipped one) may name an absolute path
    check_name(spec.name, f"task {path}: name")
    for suite in spec.suites:
        check_name(suite, f"task {path}: suites")
    own = Path(path).resolve().parent != tasks_dir().resolve()
    for key, data in (("data", spec.data), ("shots_data", spec.shots_data)):
        for rel in ([data.path] if data and data.path else []) + (list(data.files.values()) if data else []):
            if not (own and Path(rel).is_absolute()):
                check_relative(rel, f"task {path}: {key} path")
        if data is not None and data.format == "parallel" and not data.files:
            raise UserError(f"task {path}: {key}.format parallel needs {key}.files")
        if data is not None and data.format != "parallel" and not data.path:
            raise UserError(f"task {path}: missing required key {key}.path")


def task_listing() -> str:
    """The shipped tasks as a table (name, language, kind, suites, data, description), and their folder."""
    rows = [("TASK", "LANG", "KIND", "SUITES", "DATA (under the data root)", "DESCRIPTION")]
    for name, path in shipped_tasks().items():
        try:
            spec = load_task(path)
        except UserError as exc:
            rows.append((name, "?", "?", "", "", str(exc)))
            continue
        data = spec.data.path or "+".join(spec.data.files.values())
        rows.append((name, spec.lang, spec.kind, ",".join(spec.suites), data, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]
    lines += ["", "suites: " + "; ".join(f"{s} ({len(v)})" for s, v in suites().items()),
              f"task YAMLs: {tasks_dir()} (copy one, edit it, and pass the .yaml path to --tasks)"]
    return "\n".join(lines)


def suites() -> dict[str, list[str]]:
    """Suite name -> shipped task names. Bad shipped YAMLs are left to `resolve_tasks` to report."""
    out: dict[str, list[str]] = {SUITE_ALL: []}
    for name, path in shipped_tasks().items():
        out[SUITE_ALL].append(name)
        try:
            raw = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError:
            continue
        for suite in raw.get("suites", []) if isinstance(raw, dict) else []:
            out.setdefault(str(suite), []).append(name)
    return out


def resolve_tasks(items: list[str]) -> list[Path]:
    """`--tasks` entries (task names, suite names, YAML paths; comma-separated allowed) -> YAML paths, in order."""
    shipped = shipped_tasks()
    known = suites()
    paths: list[Path] = []
    for item in (part.strip() for entry in items for part in entry.split(",")):
        if not item:
            continue
        if item in known:
            paths.extend(shipped[n] for n in known[item])
        elif item in shipped:
            paths.append(shipped[item])
        elif item.endswith((".yaml", ".yml")):
            paths.append(Path(item))
        else:
            raise UserError(f"--tasks {item}: not a task, suite or .yaml file "
                            f"(suites: {', '.join(sorted(known))}; tasks: {', '.join(shipped)})")
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def default_data_root(flag: str | None = None) -> Path:
    """--data-root, else $LANGGRAFT_DATA, else ../shared/data from the cwd, else next to the repository."""
    if flag:
        return Path(flag)
    if os.environ.get("LANGGRAFT_DATA"):
        return Path(os.environ["LANGGRAFT_DATA"])
    here = Path.cwd().parent / "shared" / "data"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[4] / "shared" / "data"
