"""Source readers: plan a dataset's sources into work units, then stream raw records out of one unit.

Why not datatrove's readers: they shard by whole file (one 50 GB `.jsonl` would be one task), they do not report
invalid UTF-8 with a byte offset or broken JSON lines with line numbers, and they do not read two line-aligned
files as pairs. Here a large uncompressed `.txt`/`.jsonl` file is cut at line boundaries into chunks of about
`chunk_mb` (each chunk is one datatrove task), and line numbers stay exact because planning counts newlines.
Everything streams: lines are decoded one at a time; only `.json` (one JSON document) is read whole.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from langgraft.data.config import DatasetConfig, SourceConfig
from langgraft.errors import UserError
from langgraft.textfiles import BOM, decode_line, expand_paths, json_line

EXTENSIONS = {".txt": "text", ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".parquet": "parquet"}
LINE_READERS = ("text", "jsonl")
MAX_BROKEN_LINES = 5  # how many broken-JSON line numbers are kept for the report


def resolve_reader(src: SourceConfig, path: str) -> str:
    if src.reader != "auto":
        return src.reader
    name = path[:-3] if path.endswith(".gz") else path
    ext = Path(name).suffix.lower()
    if ext not in EXTENSIONS:
        raise UserError(f"{path}: cannot tell the reader from the extension {ext!r}; set reader: in the source")
    return EXTENSIONS[ext]


def plan_units(ds: DatasetConfig, root: Path, chunk_bytes: int) -> list[dict]:
    """Every (source, file, byte range) task of a dataset, in a fixed order (that order decides which copy of a
    duplicate is kept)."""
    units: list[dict] = []
    for si, src in enumerate(ds.sources):
        where = f"datasets[{ds.name}].sources[{si}]"
        if src.reader == "hf":
            units.append({"source": si, "path": src.path, "reader": "hf", "bytes": 0, "start": 0, "end": 0,
                          "first_line": 1})
            continue
        if ds.kind == "bilingual" and src.path2:
            units.append(_pair_unit(si, src, root, where))
            continue
        for path in expand_paths(src.path, root, where):
            reader = resolve_reader(src, str(path))
            size = path.stat().st_size
            if size == 0:
                raise UserError(f"{path}: empty file ({where})")
            if reader in LINE_READERS and not str(path).endswith(".gz") and size > chunk_bytes and not src.limit:
                units.extend(_chunks(si, path, reader, size, chunk_bytes))
            else:
                # end=0: read to the end (a .gz file's compressed size says nothing about its decoded length)
                units.append({"source": si, "path": str(path), "reader": reader, "bytes": size, "start": 0,
                              "end": 0, "first_line": 1})
    return units


def _pair_unit(si: int, src: SourceConfig, root: Path, where: str) -> dict:
    a, b = _one_file(src.path, root, where), _one_file(src.path2, root, where + ".path2")
    na, nb = count_lines(a), count_lines(b)
    if na != nb:
        raise UserError(f"{where}: parallel files differ in length: {a} has {na} lines, {b} has {nb}")
    if na == 0:
        raise UserError(f"{a}: empty file ({where})")
    size = a.stat().st_size + b.stat().st_size
    return {"source": si, "path": str(a), "path2": str(b), "reader": "pair", "bytes": size, "start": 0,
            "end": size, "first_line": 1}


def _one_file(pattern: str, root: Path, where: str) -> Path:
    paths = expand_paths(pattern, root, where)
    if len(paths) != 1:
        raise UserError(f"{where}: a parallel side must be one file, {pattern} matches {len(paths)}")
    return paths[0]


def count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with _open_binary(path) as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")  # a last line without a newline still counts


def _chunks(si: int, path: Path, reader: str, size: int, chunk_bytes: int) -> list[dict]:
    """Cut after the first newline past each `chunk_bytes`, counting lines so every chunk knows its first line."""
    starts, first_lines = [0], [1]
    pos, lines, target = 0, 0, chunk_bytes
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            while target < pos + len(block):
                i = block.find(b"\n", max(target - pos, 0))
                if i < 0:
                    break  # the newline is in a later block; search again from its start
                cut = pos + i + 1
                if cut >= size:
                    break
                starts.append(cut)
                first_lines.append(lines + block.count(b"\n", 0, i + 1) + 1)
                target = cut + chunk_bytes
            lines += block.count(b"\n")
            pos += len(block)
    ends = starts[1:] + [size]
    return [{"source": si, "path": str(path), "reader": reader, "bytes": e - s, "start": s, "end": e,
             "first_line": f} for s, e, f in zip(starts, ends, first_lines)]


def _open_binary(path: Path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def decoded_lines(path: str, start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[tuple[str, int]]:
    """(line without newline, line number) from byte `start` up to `end`; invalid UTF-8 names file, line and
    byte offset (`textfiles.decode_line`)."""
    offset, lineno = start, first_line
    with _open_binary(Path(path)) as fh:
        if start:
            fh.seek(start)
        for raw in fh:
            yield decode_line(raw, path, lineno, offset=offset).rstrip("\r\n"), lineno
            offset += len(raw)
            lineno += 1
            if end is not None and offset >= end:
                break


def read_unit(unit: dict, src: SourceConfig, strict: bool, tally: dict) -> Iterator[tuple[dict, str]]:
    """Raw records of one unit as (dict, location); broken JSON lines are counted in `tally` (or raise)."""
    reader, path = unit["reader"], unit["path"]
    if reader == "pair":
        lines_b = decoded_lines(unit["path2"])
        for (a, line), (b, _) in zip(decoded_lines(path), lines_b):
            yield {src.src: a, src.tgt: b}, f"{path}:{line}"
        return
    if reader in ("text", "jsonl"):
        yield from _line_records(unit, src, strict, tally)
    elif reader == "blocks":
        yield from _blocks(path)
    elif reader == "json":
        yield from _json_records(path)
    elif reader in ("csv", "tsv"):
        yield from _csv_records(path, "\t" if reader == "tsv" else ",")
    elif reader == "parquet":
        yield from _parquet_records(path)
    elif reader == "hf":
        yield from _hf_records(src)
    else:
        raise UserError(f"{path}: unknown reader {reader!r}")


def _line_records(unit: dict, src: SourceConfig, strict: bool, tally: dict) -> Iterator[tuple[dict, str]]:
    path, is_json = unit["path"], unit["reader"] == "jsonl"
    for text, line in decoded_lines(path, unit["start"], unit["end"] or None, unit["first_line"]):
        if not text.strip():
            continue
        if not is_json:
            if src.line_prefix:
                if not text.startswith(src.line_prefix):
                    continue
                text = text[len(src.line_prefix):]
            yield {"text": text}, f"{path}:{line}"
            continue
        if strict:
            record = json_line(text, path, line)
        else:
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                _tally_broken(tally, f"{path}:{line}")
                continue
        if not isinstance(record, dict):
            raise UserError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
        yield record, f"{path}:{line}"


def _tally_broken(tally: dict, where: str) -> None:
    """Count a broken JSON line, keeping the first few locations for the report."""
    tally["broken_json"] = tally.get("broken_json", 0) + 1
    tally.setdefault("broken_json_lines", [])
    if len(tally["broken_json_lines"]) < MAX_BROKEN_LINES:
        tally["broken_json_lines"].append(where)


def _blocks(path: str) -> Iterator[tuple[dict, str]]:
    block: list[str] = []
    first = 0
    for text, line in decoded_lines(path):
        if text.strip():
            if not block:
                first = line
            block.append(text)
        elif block:
            yield {"text": "\n".join(block)}, f"{path}:{first}"
            block = []
    if block:
        yield {"text": "\n".join(block)}, f"{path}:{first}"


def _json_records(path: str) -> Iterator[tuple[dict, str]]:
    with _open_binary(Path(path)) as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start} of the "
                        "file)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    items = data if isinstance(data, list) else [data]
    for i, record in enumerate(items):
        if not isinstance(record, dict):
            raise UserError(f"{path}: item {i} is a {type(record).__name__}, expected an object")
        yield record, f"{path} item {i}"


def _csv_records(path: str, delimiter: str) -> Iterator[tuple[dict, str]]:
    import csv

    numbered = decoded_lines(path)
    current = {"line": 1}

    def lines() -> Iterator[str]:
        for text, line in numbered:
            current["line"] = line
            yield text + "\n"

    reader = csv.DictReader(lines(), delimiter=delimiter)
    try:
        for row in reader:
            yield row, f"{path}:{current['line']}"
    except csv.Error as exc:
        raise UserError(f"{path}:{current['line']}: broken CSV ({exc})") from None


def _parquet_records(path: str) -> Iterator[tuple[dict, str]]:
    from langgraft.data.load import parquet_batches

    n = 0
    for batch in parquet_batches(path):
        for row in batch.to_pylist():
            n += 1
            yield row, f"{path} row {n}"


def _hf_records(src: SourceConfig) -> Iterator[tuple[dict, str]]:
    import datasets

    if Path(src.path).is_dir():
        data = datasets.load_from_disk(src.path)
        if isinstance(data, datasets.DatasetDict):
            if src.split not in data:
                raise UserError(f"{src.path}: no split {src.split!r} (has: {', '.join(data)})")
            data = data[src.split]
    else:  # a hub id: needs network
        data = datasets.load_dataset(src.path, split=src.split, streaming=True)
    for i, row in enumerate(data):
        yield row, f"{src.path}[{src.split}] row {i}"


def field_text(record: dict, name: str, where: str, *, required: bool = True) -> str:
    """A (dotted) field as text: lists of strings are joined by newlines; missing → UserError naming it."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            if not required:
                return ""
            present = ", ".join(sorted(map(str, record))[:12])
            raise UserError(f"{where}: missing field {name!r} (present: {present})")
        value = value[part]
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value if v is not None)
    return str(value)


def explode(record: dict, name: str, where: str) -> list[dict]:
    """`records: instances`: each element of the list field, merged over its parent's other fields."""
    if not name:
        return [record]
    items = record.get(name)
    if not isinstance(items, list):
        raise UserError(f"{where}: missing list field {name!r} (records:)")
    parent = {k: v for k, v in record.items() if k != name}
    return [{**parent, **item} if isinstance(item, dict) else {**parent, name: item} for item in items]


ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "model": "assistant",
         "bot": "assistant", "system": "system"}


def chat_turns(record: dict, name: str, role: str, content: str, where: str) -> list[dict]:
    """The list field `name` as [{"role": user|assistant|system, "content": str}], roles named as OpenAI does."""
    turns = record.get(name)
    if not isinstance(turns, list):
        raise UserError(f"{where}: field {name!r} is not a list of chat turns")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role not in turn or content not in turn:
            raise UserError(f"{where}: {name}[{i}] needs {role!r} and {content!r} fields")
        mapped = ROLES.get(str(turn[role]).lower())
        if mapped is None:
            raise UserError(f"{where}: {name}[{i}].{role} {turn[role]!r} is not one of {', '.join(ROLES)}")
        out.append({"role": mapped, "content": "" if turn[content] is None else str(turn[content])})
    return out
