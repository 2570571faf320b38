"""Verb options as data: a verb's options dataclass is the one source of its command-line flags, their `--help`
texts, the recipe section that sets the same things, and the part of its output fingerprint they decide.

A field's comment is its help (`config.field_help`), its type its flag's parser and check (a `Range` on a number, a
`Literal`'s choices), its default the flag's default. `option(...)` adds what a field needs beyond that: a metavar,
a flag that is required on the command line, a setting that does not change the output (left out of the
fingerprint) or one the recipe sets otherwise. argparse builds and parses the flags; the values then pass through
`config.from_dict`, the same check a YAML file gets. Torch-free: every `langgraft` call builds every verb's parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from langgraft.config import Range, field_help, from_dict, ranged

_NO_DEFAULT = dataclasses.MISSING


def option(default: Any = _NO_DEFAULT, *, factory: Any = _NO_DEFAULT, metavar: str | None = None,
           required: bool = False, fingerprint: bool = True, flag: bool = True, repeat: bool = False) -> Any:
    """A dataclass field with command-line extras. required: the flag must be given on the command line (the
    recipe fills it otherwise); fingerprint=False: it does not change what the verb writes (threads, a device);
    flag=False: no command-line flag (set another way there); repeat: a list given as `--flag A --flag B`."""
    meta = {"metavar": metavar, "required": required, "fingerprint": fingerprint, "flag": flag, "repeat": repeat}
    if factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not _NO_DEFAULT:
        return f.default
    return f.default_factory() if f.default_factory is not _NO_DEFAULT else None


def add_flags(p: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (), **defaults: Any) -> None:
    """One flag per field of `cls` (but `skip` and `flag=False` fields); `defaults` replace a field's default on
    the command line only (e.g. a shorter generation budget for `chat`)."""
    hints = get_type_hints(cls, include_extras=True)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("flag", True):
            continue
        if dataclasses.is_dataclass(hints[f.name]):  # a nested group of options: its flags, unprefixed
            add_flags(p, hints[f.name], skip=skip, **defaults)
            continue
        default = defaults.get(f.name, default_of(f))
        kwargs = _flag_kwargs(hints[f.name], default, f.metadata)
        shown = kwargs.get("default")
        text = helps[f.name]
        if shown not in (None, False, "", [], {}) and "default" not in text:
            text += f" (default: {shown})"
        p.add_argument(flag_name(f.name), dest=f.name, help=text, **kwargs)


def _flag_kwargs(tp: Any, default: Any, meta: Any) -> dict:
    base, rule, _optional = _unwrap(tp)
    kwargs: dict = {"default": default}
    if meta.get("required"):
        kwargs = {"required": True}
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    origin = get_origin(base)
    if base is bool:
        kwargs.pop("metavar", None)
        kwargs["action"] = "store_true" if not default else argparse.BooleanOptionalAction
    elif origin is Literal:
        kwargs["choices"] = list(get_args(base))
    elif origin is list:
        item, item_rule, _ = _unwrap((get_args(base) or (str,))[0])
        if meta.get("repeat"):
            kwargs.update(action="append", default=list(default or []))
        else:
            kwargs["nargs"] = "+"
        kwargs["type"] = ranged(item, item_rule or Range()) if item in (int, float) else item
        if item in (int, float):  # numbers also as one comma-separated list: `--sweep 5000,10000`
            kwargs["type"] = _comma_list(kwargs["type"])
    elif origin is dict:  # KEY=VALUE items, read like YAML scalars (`zwnj_repair=false` is False)
        kwargs["nargs"] = "*"
        kwargs.setdefault("metavar", "KEY=VALUE")
        kwargs["default"] = [f"{k}={v}" for k, v in (default or {}).items()]
    else:
        kwargs["type"] = ranged(base, rule) if rule else base
    return kwargs


def _comma_list(parse: Any) -> Any:
    def split(text: str) -> list:
        return [parse(part) for part in text.split(",") if part.strip()]

    split.__name__ = parse.__name__
    return split


def _unwrap(tp: Any) -> tuple[Any, Range | None, bool]:
    """(base type, its Range or None, whether None is allowed) of `Optional[Annotated[T, Range]]` and friends."""
    optional = False
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        tp = args[0]
    rule = None
    if get_origin(tp) is not None and hasattr(tp, "__metadata__"):
        rule = next((m for m in tp.__metadata__ if isinstance(m, Range)), None)
        tp = get_args(tp)[0]
    return tp, rule, optional


def from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """A `cls` from the parsed flags (and `given` values for fields that have no flag), checked as a config."""
    import yaml

    from langgraft.config import to_dict

    hints = get_type_hints(cls, include_extras=True)
    data = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            data[f.name] = given[f.name]
        elif dataclasses.is_dataclass(hints[f.name]):
            data[f.name] = to_dict(from_args(hints[f.name], args))
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(value, list) and any(isinstance(v, list) for v in value):  # comma lists, flattened
                value = [v for part in value for v in (part if isinstance(part, list) else [part])]
            if get_origin(_unwrap(hints[f.name])[0]) is dict and isinstance(value, list):
                value = {k: yaml.safe_load(v) if v else "" for k, _, v in (_pair(item, f.name) for item in value)}
            data[f.name] = value
    return from_dict(cls, data, source="command line")


def _pair(item: str, name: str) -> tuple[str, str, str]:
    from langgraft.errors import UserError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"{flag_name(name)} {item!r}: expected KEY=VALUE")
    return key, sep, value


def check_ranges(obj: Any) -> None:
    """Every numeric field of `obj` inside its `Range`, for options built in Python rather than parsed (the
    message names the flag, as a parse error would)."""
    from langgraft.errors import UserError

    hints = get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        rule, value = _unwrap(hints[f.name])[1], getattr(obj, f.name)
        if rule is not None and isinstance(value, (int, float)) and not rule.ok(value):
            raise UserError(f"{flag_name(f.name)}: must be {rule}, got {value}")


def settings(obj: Any) -> dict:
    """The fields of an options dataclass that decide what the verb writes: the part of its fingerprint they
    make (every field but those marked fingerprint=False)."""
    from langgraft.config import to_dict

    return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if f.metadata.get("fingerprint", True)}


def project(cls: type, obj: Any) -> Any:
    """The `cls` part of `obj` (a recipe section that extends a verb's options): the verb's own options."""
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})
