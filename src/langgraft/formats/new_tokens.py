"""`new_tokens.json`: the tokens `tokenizer extend` appended to a base vocabulary.

`extend` reads it to know which embedding rows are new and how the base tokenizer split each one (mean-subtokens
initialisation) and copies it into the extended model; `train rows=new` reads it there to train only those rows,
and `export` carries it along so the next stage can do the same. Shape:

    {"base_vocab_size": int, "vocab_size": int,
     "tokens": [{"id": int, "token": vocab string, "text": surface text, "base_ids": [int, ...]}, ...]}
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.formats import copy_if_present
from langgraft.rundir import write_json
from langgraft.textfiles import read_json_object

NAME = "new_tokens.json"
FIELDS = ("base_vocab_size", "vocab_size", "tokens")


def write_new_tokens(folder: Path, base_vocab_size: int, tokens: list[dict], *, vocab_size: int | None = None) -> None:
    """`vocab_size` defaults to the base plus the new tokens (the tokens appended right after the base)."""
    size = base_vocab_size + len(tokens) if vocab_size is None else vocab_size
    write_json(folder / NAME, {"base_vocab_size": base_vocab_size, "vocab_size": size, "tokens": tokens})


def read_new_tokens(folder: str | Path, *, flag: str = "--tokenizer",
                    made_by: str = "`langgraft tokenizer extend`") -> dict:
    """The checked contents of `folder/new_tokens.json`; a missing file or field is one UserError line (`flag`
    names where the folder came from, `made_by` the verb whose output it should be)."""
    path = Path(folder) / NAME
    if not path.is_file():
        raise UserError(f"{flag} {folder}: no {NAME} (expected a {made_by} output)")
    data = read_json_object(path)
    for key in FIELDS:
        if key not in data:
            raise UserError(f"{path}: missing field {key}")
    if not isinstance(data["tokens"], list):
        raise UserError(f"{path}: tokens is not a list")
    for i, token in enumerate(data["tokens"]):
        if not isinstance(token, dict) or not isinstance(token.get("id"), int):
            raise UserError(f"{path}: tokens[{i}] has no integer id")
    return data


def copy_new_tokens(src: str | Path, dst: Path) -> bool:
    """Copy `src/new_tokens.json` into `dst` when there is one; whether it was."""
    return copy_if_present(src, dst, NAME)
