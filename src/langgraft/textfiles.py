"""Reading text files — `.txt` lines, `.jsonl` records, a file holding one JSON object — `NAME=PATH` pairs and the
files a glob names: what every verb that reads such a file shares.

Lines are decoded one at a time (a big file never sits in memory), and every problem is one UserError in one
wording, `FILE:LINE: what is wrong`. A UTF-8 byte-order mark on the first line is dropped: editors on Windows
write one, it is not text, and `json.loads` rejects it.
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from langgraft.errors import UserError

BOM = "\ufeff"


def decode_line(raw: bytes, path: str | Path, lineno: int, *, offset: int | None = None) -> str:
    """`raw` (one line of `path`, newline kept) as text, the BOM dropped on line 1. Invalid UTF-8 names the byte:
    within the file when the line's byte `offset` is given (big files), else within the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = f"byte {offset + exc.start} of the file" if offset is not None else f"byte {exc.start + 1} of the line"
        raise UserError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at {at})") from None
    return text[1:] if lineno == 1 and text.startswith(BOM) else text


def iter_lines(path: str | Path) -> Iterator[tuple[str, int]]:
    """(line without its newline, line number) for every line of `path`, empty ones included."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            yield decode_line(raw, path, lineno).rstrip("\r\n"), lineno


def json_line(line: str, path: str | Path, lineno: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def read_text(path: str | Path) -> str:
    """A whole (small) text file, such as a YAML config; not UTF-8 is one UserError line naming the byte."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at byte {exc.start} of the "
                        "file)") from None


def check_unicode(text: str, where: str) -> str:
    """`text` if it can be written as UTF-8: a lone surrogate (a JSON `\\ud800` escape, or undecodable bytes in
    a command-line argument) cannot be tokenized or written out, so it is one UserError line here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:  # how Python keeps an undecodable byte of a command line or of stdin
            raise UserError(f"{where}: not valid UTF-8 (byte 0x{code - 0xDC00:02x} at character {exc.start + 1})"
                            ) from None
        raise UserError(f"{where}: not valid Unicode (a lone surrogate U+{code:04X} at character "
                        f"{exc.start + 1})") from None
    return text


def read_json_object(path: str | Path) -> dict:
    """A whole file holding one JSON object (a record one stage writes for another)."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def text_field(record: Any, field: str, path: str | Path, lineno: int) -> str | None:
    """The string `field` of a JSON record (None when it is null)."""
    if not isinstance(record, dict) or field not in record:
        raise UserError(f"{path}:{lineno}: no field {field!r}")
    value = record[field]
    if value is not None and not isinstance(value, str):
        raise UserError(f"{path}:{lineno}: field {field!r} is {type(value).__name__}, not a string")
    return value


def iter_texts(path: str | Path, *, field: str = "text", skipped: Counter | None = None) -> Iterator[str]:
    """Every non-empty line of a .txt file, or the string `field` of every JSON line of a .jsonl file; empty
    lines and null fields are skipped (and counted in `skipped`, by reason, when given)."""
    skipped = Counter() if skipped is None else skipped
    is_jsonl = Path(path).suffix.lower() == ".jsonl"
    for line, lineno in iter_lines(path):
        if not line.strip():
            skipped["empty_line"] += 1
            continue
        if not is_jsonl:
            yield line
            continue
        value = text_field(json_line(line, path, lineno), field, path, lineno)
        if value is None:
            skipped["null_field"] += 1
            continue
        yield value


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """`NAME=PATH` items → ordered dict; a malformed item or a name given twice is one line naming the flag."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UserError(f"{flag} {item!r}: expected NAME=PATH")
        if name in pairs:
            raise UserError(f"{flag} {item!r}: name {name!r} given twice")
        pairs[name] = path
    return pairs


def expand_paths(pattern: str, root: Path, where: str) -> list[Path]:
    """The files a glob names (relative to `root` unless absolute), sorted; none is an error naming `where`."""
    if not pattern:
        raise UserError(f"{where}.path is empty")
    if not Path(pattern).is_absolute() and ".." in Path(pattern).parts:
        raise UserError(f"{where}.path: {pattern!r} climbs out of the data root {root} with `..`; name the file "
                        "inside it, or by its absolute path")
    full = pattern if Path(pattern).is_absolute() else str(root / pattern)
    paths = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
    if not paths:
        raise UserError(f"{where}.path: no files match {full}")
    return paths
