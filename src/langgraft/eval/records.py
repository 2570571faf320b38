"""Read a task's dataset file and turn its records into examples (prompt variables, choices, gold, references).

Readers cover exactly the shapes the shipped tasks use (json/jsonl records, csv with embedded newlines, tsv
without quoting, `label text` lines, line-aligned parallel files); a record that lacks a field the task needs is a
UserError naming the task, file and record, and records skipped on purpose (label outside `label_map`) are counted.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.eval.tasks import DataSpec, TaskSpec
from langgraft.textfiles import iter_lines, json_line

csv.field_size_limit(1 << 26)


@dataclass
class Example:
    # the record's own id (task `id_field`) when every record has a unique one, else its position in the data;
    # either way stable, so samples and paired comparisons line up across runs
    id: int | str
    vars: dict[str, str]  # prompt template variables
    choices: list[str] = field(default_factory=list)
    gold: int = -1
    refs: list[str] = field(default_factory=list)
    text: str = ""


def read_records(spec: DataSpec, root: Path, task: str) -> tuple[list[dict], str]:
    """All records of the dataset, plus a display name of the file(s) for error messages."""
    try:
        return _read_records(spec, root, task)
    except UnicodeDecodeError as exc:  # csv, tsv and json files, read whole (line files name their line)
        shown = "+".join(str(root / f) for f in ([spec.path] if spec.path else spec.files.values()))
        raise UserError(f"task {task}: {shown}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x}); "
                        "convert the file to UTF-8") from None


def _read_records(spec: DataSpec, root: Path, task: str) -> tuple[list[dict], str]:
    if spec.format == "parallel":
        columns = {col: _read_lines(root / rel, task) for col, rel in spec.files.items()}
        lengths = {len(v) for v in columns.values()}
        shown = "+".join(str(root / rel) for rel in spec.files.values())
        if len(lengths) != 1:
            raise UserError(f"task {task}: {shown}: parallel files have different line counts {sorted(lengths)}")
        return [dict(zip(columns, row)) for row in zip(*columns.values())], shown
    paths = data_files(spec, root, task)
    records = [r for path in paths for r in _read_file(spec, path, task)]
    return records, str(paths[0]) if len(paths) == 1 else f"{root / spec.path} ({len(paths)} files)"


def data_files(spec: DataSpec, root: Path, task: str) -> list[Path]:
    """The files a data spec reads, in order: `path` may be a glob (several files, one task), sorted by name."""
    from langgraft.textfiles import expand_paths

    if spec.format == "parallel":
        return [root / rel for rel in spec.files.values()]
    if not any(c in spec.path for c in "*?["):
        path = root / spec.path
        if not path.is_file():
            raise UserError(f"task {task}: dataset file not found: {path} (data root {root}; set --data-root)")
        return [path]
    try:
        return expand_paths(spec.path, root, f"task {task}: data")
    except UserError as exc:
        raise UserError(f"{exc} (data root {root}; set --data-root)") from None


def _read_file(spec: DataSpec, path: Path, task: str) -> list:
    if spec.format in ("jsonl", "lines"):
        try:
            lines = [(line, i) for line, i in iter_lines(path) if line.strip()]
            if spec.format == "jsonl":
                return [json_line(line, path, i) for line, i in lines]
        except UserError as exc:
            raise UserError(f"task {task}: {exc}") from None
        parts = len(spec.columns) - 1
        return [dict(zip(spec.columns, line.split(spec.separator, parts))) for line, _ in lines]
    with path.open(encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM is not part of the first field
        if spec.format == "json":
            try:
                records = json.load(fh)
            except json.JSONDecodeError as exc:
                raise UserError(f"task {task}: {path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        elif spec.format == "csv":
            records = list(csv.DictReader(fh))
        else:  # tsv
            # Quoted fields matter: FarsTail quotes premises that contain tabs.
            records = list(csv.DictReader(fh, delimiter="\t"))
    if not isinstance(records, list):
        raise UserError(f"task {task}: {path}: expected a list of records, got {type(records).__name__}")
    return records


def _read_lines(path: Path, task: str) -> list[str]:
    """Every line, empty ones too: parallel files pair line k with line k."""
    if not path.is_file():
        raise UserError(f"task {task}: dataset file not found: {path}")
    try:
        return [line for line, _ in iter_lines(path)]
    except UserError as exc:
        raise UserError(f"task {task}: {exc}") from None


def get_path(record: Any, path: str) -> Any:
    """`a.0.b` walks dicts and lists; `a.*.1` maps the rest of the path over a list. KeyError when absent."""
    head, _, rest = path.partition(".")
    if head == "*":
        if not isinstance(record, list):
            raise KeyError(path)
        return [get_path(item, rest) if rest else item for item in record]
    if isinstance(record, list):
        if not head.isdigit() or int(head) >= len(record):
            raise KeyError(path)
        value = record[int(head)]
    elif isinstance(record, dict):
        if head not in record or record[head] is None:
            raise KeyError(path)
        value = record[head]
    else:
        raise KeyError(path)
    return get_path(value, rest) if rest else value


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def build_examples(task: TaskSpec, records: list[dict], shown: str) -> tuple[list[Example], Counter]:
    """Examples in file order plus a Counter of skipped records by reason."""
    skipped: Counter = Counter()
    examples = []
    for index, record in enumerate(records):
        try:
            ex = _example(task, index, record, skipped)
        except KeyError as exc:
            raise UserError(f"task {task.name}: {shown}: record {index + 1}: missing field "
                            f"{exc.args[0]!r}") from None
        if ex is not None:
            examples.append(ex)
    own = _own_ids(task, records, [ex.id for ex in examples])
    for ex, own_id in zip(examples, own or []):
        ex.id = own_id
    return examples, skipped


def _own_ids(task: TaskSpec, records: list, positions: list[int]) -> list[str] | None:
    """The examples' own ids from the records, or None when one lacks it or two share one (positions then)."""
    if not task.id_field:
        return None
    ids = []
    for i in positions:
        try:
            value = get_path(records[i], task.id_field)
        except KeyError:
            return None
        if isinstance(value, (dict, list)):
            return None
        ids.append(str(value))
    return ids if len(set(ids)) == len(ids) else None


def _example(task: TaskSpec, index: int, record: dict, skipped: Counter) -> Example | None:
    ex = Example(id=index, vars={k: _as_text(get_path(record, p)) for k, p in task.fields.items()})
    if task.kind == "choice":
        ex.choices = ([str(c) for c in get_path(record, task.choices_field)] if task.choices_field
                      else list(task.choices))
        raw = str(get_path(record, task.label)).strip()
        if task.label_map:
            if raw not in task.label_map:
                skipped[f"label {raw!r} not in label_map"] += 1
                return None
            ex.gold = task.label_map[raw]
        else:
            try:
                ex.gold = int(raw) - task.label_offset
            except ValueError:
                skipped[f"label {raw!r} is not an integer"] += 1
                return None
        if not 0 <= ex.gold < len(ex.choices):
            skipped[f"label {raw!r} outside the choices"] += 1
            return None
        if task.choices_field and not _drop_blank_choices(ex, skipped):
            return None
    elif task.kind == "generate":
        value = get_path(record, task.target)
        ex.refs = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        ex.refs = [r for r in ex.refs if r.strip()]
        if not ex.refs:
            skipped["empty reference"] += 1
            return None
    else:
        ex.text = _as_text(get_path(record, task.text)).strip()
        if task.max_chars:
            ex.text = ex.text[: task.max_chars]
        if not ex.text:
            skipped["empty text"] += 1
            return None
    return ex


def _drop_blank_choices(ex: Example, skipped: Counter) -> bool:
    """Remove empty slots from a per-record choice list (ParsiNLU pads its 2- and 3-option questions to 4 with "").

    A blank choice is no answer: scored, it is one space token, which outscores every real answer's several tokens
    and would win most of the questions it appears in. False (the record is skipped) if the gold one is blank.
    """
    keep = [i for i, c in enumerate(ex.choices) if c.strip()]
    if ex.gold not in keep:
        skipped["gold choice is empty"] += 1
        return False
    ex.gold = keep.index(ex.gold)
    ex.choices = [ex.choices[i] for i in keep]
    return True


def render(task: TaskSpec, ex: Example) -> str:
    try:
        return task.prompt.format(**ex.vars)
    except (KeyError, IndexError) as exc:
        raise UserError(f"task {task.name}: prompt uses {{{exc.args[0]}}} which is not in `fields`") from None


def answer(task: TaskSpec, ex: Example) -> str:
    """The gold continuation of an in-context example."""
    return ex.choices[ex.gold] if task.kind == "choice" else ex.refs[0]


def with_shots(task: TaskSpec, ex: Example, pool: list[Example], shots: int) -> str:
    """The prompt of `ex` preceded by `shots` solved examples drawn from `pool` (never `ex` itself).

    The draw is seeded by task seed and example id only, so every model sees exactly the same shots.
    """
    prompt = render(task, ex)
    if shots <= 0:
        return prompt
    rng = random.Random(f"{task.name}:{task.seed}:{ex.id}")
    # A pool read from `shots_data` is another file: its ids do not name eval examples.
    candidates = pool if task.shots_data is not None else [p for p in pool if p.id != ex.id]
    chosen = rng.sample(candidates, min(shots, len(candidates)))
    demos = [render(task, s) + task.choice_prefix + answer(task, s) for s in chosen]
    return task.shot_separator.join([*demos, prompt])
