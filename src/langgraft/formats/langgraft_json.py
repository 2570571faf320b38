"""`langgraft.json`: what a tokenizer folder records about the text it was made for.

`tokenizer train` and `tokenizer extend` write it next to their tokenizer; `tokenizer extend --add DIR` reads a
trained folder's copy so the extension applies the same language and normaliser settings as training did. Shape:
`{"lang": code, "normalizer": {option: value}, ...}` plus what the writing verb adds about itself (`model_type`,
`vocab_size`; `base`, `base_kind`).
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.rundir import write_json
from langgraft.textfiles import read_json_object

NAME = "langgraft.json"


def write_langgraft_json(folder: Path, lang: str, normalizer: dict, **facts) -> None:
    write_json(folder / NAME, {"lang": lang, "normalizer": normalizer, **facts})


def read_langgraft_json(folder: str | Path) -> dict:
    """The checked contents of `folder/langgraft.json`, or {} when the folder has none."""
    path = Path(folder) / NAME
    if not path.is_file():
        return {}
    data = read_json_object(path)
    if not isinstance(data.get("lang", ""), str):
        raise UserError(f"{path}: lang is not a language code")
    if not isinstance(data.get("normalizer") or {}, dict):
        raise UserError(f"{path}: normalizer is not an object of options")
    return data
