"""Typed configuration: dataclasses per section, YAML as their serialisation, dotted overrides.

Every stage declares its config as a (nested) dataclass whose fields carry defaults and a one-line docstring
comment. `load_config(Cls, path, overrides)` reads YAML, applies `section.key=value` overrides (values parsed as
YAML scalars, so `lr=2e-4`, `rows=new`, `targets=[q_proj,v_proj]` all work) and checks every key and type,
raising one `UserError` line that names the offending key. Unknown keys are errors, never ignored.

Written by hand because the candidates (OmegaConf, pydantic, dacite) either coerce silently, add a heavy
dependency, or do not name the dotted key in their errors; the checker below is ~100 lines.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from langgraft.errors import UserError


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field (`Annotated[int, Range(1)]`) or CLI flag (`ranged(int, Range(1))`):
    the schema says what a number may be, so a negative learning rate or a zero rank is one line, not a run."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is excluded
    hi_open: bool = False

    def ok(self, value: float) -> bool:
        if value != value or value in (float("inf"), float("-inf")):  # NaN and infinities are never a setting
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '≥'} {self.lo:g}" if self.lo is not None else "finite"
        if self.lo is None:
            return f"{'<' if self.hi_open else '≤'} {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


# the ranges most fields need; a field with another range writes its own Annotated[...]
PosInt = Annotated[int, Range(1)]
NonNegInt = Annotated[int, Range(0)]
PosFloat = Annotated[float, Range(0, lo_open=True)]
NonNegFloat = Annotated[float, Range(0)]
Share = Annotated[float, Range(0, 1)]
Finite = Annotated[float, Range()]


def ranged(tp: type, rule: Range) -> typing.Callable[[str], Any]:
    """An argparse `type=` for a number flag with a range; argparse names the flag in its one-line error."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if tp is int else 'a number'}, got {text!r}")
        if not rule.ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = tp.__name__
    return parse


def load_config(cls: type, path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Any:
    """Build a `cls` instance from an optional YAML file plus `a.b=c` overrides; validate everything."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at byte {exc.start} of "
                            "the file)") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise UserError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return from_dict(cls, raw, source=source)


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` inside the nested dict `raw`; the value is parsed as a YAML scalar/flow value."""
    if "=" not in item:
        raise UserError(f"override {item!r} must look like section.key=value")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {key}: {part} is not a section")
        node = child
    if parts[-1] == "overrides" and isinstance(node.get("overrides"), list) and value != []:
        value = merge_overrides(node["overrides"], value, key=key)
    node[parts[-1]] = value


def merge_overrides(old: list, new: Any, *, key: str) -> list:
    """A list of `k=v` overrides given over another one merges by key: `align.overrides=[max_steps=100]` changes
    max_steps and keeps the rest of the recipe's list, which replacing it would silently drop (an explicit `=[]`
    still clears it). Same key twice: the later one wins, in the earlier one's place."""
    new = [new] if isinstance(new, str) else new
    if not isinstance(new, list):
        raise UserError(f"override {key}: must be a list of key=value items, got {type(new).__name__}")
    merged = {}
    for item in [*old, *new]:
        if not isinstance(item, str) or "=" not in item:
            raise UserError(f"override {key}: item {item!r} must look like key=value")
        merged[item.partition("=")[0].strip()] = item
    return list(merged.values())


def from_dict(cls: type, data: Any, *, source: str = "config", prefix: str = "") -> Any:
    """Convert a plain dict into dataclass `cls`, checking keys and types; errors name the dotted key."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise UserError(f"{source}: {where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{source}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    hints = get_type_hints(cls, include_extras=True)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source=source, key=f"{prefix}{name}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"{source}: missing required key {prefix}{missing[0]}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict (for manifests and YAML dumps)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _coerce(tp: Any, value: Any, *, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *rules = get_args(tp)
        value = _coerce(base, value, source=source, key=key)
        for rule in rules:
            if isinstance(rule, Range) and not rule.ok(value):
                raise UserError(f"{source}: {key} must be {rule}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source=source, key=key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{source}: {key} must not be null")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise UserError(f"{source}: {key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin in (list, tuple):
        if isinstance(value, str) and origin is list:
            value = [value]  # `targets=q_proj` on the command line means a one-element list
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: {key} must be a list, got {type(value).__name__}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(item_tp, v, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {str(k): _coerce(val_tp, v, source=source, key=f"{key}.{k}") for k, v in value.items()}
    return _scalar(tp, value, source=source, key=key)


def _scalar(tp: Any, value: Any, *, source: str, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), source, key)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string; accept it as the float it is
            try:
                return _finite(float(value), source, key)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    name = getattr(tp, "__name__", str(tp))
    raise UserError(f"{source}: {key} must be {name}, got {type(value).__name__} {value!r}")


def _finite(value: float, source: str, key: str) -> float:
    if not Range().ok(value):
        raise UserError(f"{source}: {key} must be a finite number, got {value!r}")
    return value


def field_help(cls: type) -> dict[str, str]:
    """Each field's one-line meaning, read from the comment on its line (or the comment lines right above it) in
    the source of the dataclass that declares it (a subclass inherits its base's comments); a field made without
    source (`make_dataclass`) gives it as `metadata["help"]`. The config classes document themselves there, and
    `--help` and `--show-config` print that, so the help cannot drift from the code."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and "__dataclass_fields__" in vars(klass):
            helps.update({k: v for k, v in _source_comments(klass).items() if v})
    return {f.name: f.metadata.get("help") or helps.get(f.name, "") for f in dataclasses.fields(cls)}


def _source_comments(cls: type) -> dict[str, str]:
    import inspect
    import io
    import tokenize

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # made at run time: no source to read
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    helps: dict[str, str] = {}
    above: list[str] = []
    current = previous = None
    inline = False
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if current is not None:  # on the field's line: it replaces the comment above; a second line adds
                helps[current] = f"{helps[current]} {text}" if inline else text
                inline = True
            elif tok.line.strip().startswith("#"):
                above.append(text)
        elif tok.type == tokenize.NEWLINE:
            current = None
        elif tok.type == tokenize.NL and current is None and not tok.line.strip():
            above = []  # a blank line ends a comment block
        elif (tok.string == ":" and previous is not None and previous.string in names and current is None
              and not previous.line[:previous.start[1]].strip()):
            current, inline = previous.string, False
            helps[current] = " ".join(above)
            above = []
        previous = tok
    return helps


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, meaning) of every field of `cls`, nested sections flattened."""
    rows = []
    hints = get_type_hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f"{prefix}{f.name}", _type_name(tp), default, helps[f.name]))
    return rows


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(map(str, get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " or null"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))
