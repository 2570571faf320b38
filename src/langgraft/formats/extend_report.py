"""The reports of the two extend steps, under two names, so that a folder's report says which step wrote it.

`extend_report.json` (`extend`, the model surgery): sizes, padding, the init method, whether the head is tied, and
`source_model`, the model that was extended. `export` carries it into its `model/`, and the adapter's README reads
`source_model` to name the hub model an extended base came from. Shape:

    {"base_vocab_size", "old_rows", "vocab_size", "padded_vocab_size", "new_tokens", "padding_rows", "init",
     "mean_fallbacks", "tied", "superset_check", "model_type", "source_model": hub id or path}

`tokenizer_extend_report.json` (`tokenizer extend`): what was merged into the base tokenizer (pieces added,
merges moved, examples), written for the user; no later stage reads it. Tokenizer folders written before it had
its own name hold it as `extend_report.json`; nothing reads a tokenizer folder's report, so it is not mistaken
for the surgery's.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.formats import copy_if_present
from langgraft.rundir import write_json
from langgraft.textfiles import read_json_object

NAME = "extend_report.json"
TOKENIZER_NAME = "tokenizer_extend_report.json"


def write_extend_report(folder: Path, report: dict) -> None:
    write_json(folder / NAME, report)


def write_tokenizer_extend_report(folder: Path, report: dict) -> None:
    write_json(folder / TOKENIZER_NAME, report)


def source_model(folder: str | Path) -> str | None:
    """The model `extend` resized into `folder`, or None when the folder is no `extend` output."""
    path = Path(folder) / NAME
    if not path.is_file():
        return None
    source = read_json_object(path).get("source_model")
    if source is not None and not isinstance(source, str):
        raise UserError(f"{path}: source_model is not a model name")
    return source


def copy_extend_report(src: str | Path, dst: Path) -> bool:
    """Copy `src/extend_report.json` into `dst` when there is one; whether it was."""
    return copy_if_present(src, dst, NAME)
