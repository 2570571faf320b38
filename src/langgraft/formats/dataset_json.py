"""`dataset.json`: what `data prepare` published in a dataset folder, and where its Parquet shards are.

`train`, `tokenizer train`, `tokenizer report`, the pipeline's report and the model card read it. Shape:

    {"name", "kind": monolingual | bilingual | instructions, "lang": code (bilingual: "SRC-TGT"),
     "licenses": [..], bilingual also "format", "src_lang", "tgt_lang",
     "splits": {SPLIT: {"files": [relative .parquet paths], "records": int}}}
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.rundir import write_json
from langgraft.textfiles import read_json_object

NAME = "dataset.json"


def write_dataset_info(folder: Path, info: dict) -> None:
    write_json(folder / NAME, info)


def is_prepared(folder: str | Path) -> bool:
    """Whether `folder` is a `data prepare` dataset (holds a dataset.json)."""
    return (Path(folder) / NAME).is_file()


def dataset_info(folder: str | Path) -> dict:
    """The checked contents of `folder/dataset.json`; a missing file or one without splits of files is one
    UserError line."""
    path = Path(folder) / NAME
    if not path.is_file():
        raise UserError(f"{folder}: not a prepared dataset (no {NAME}); run `langgraft data prepare`")
    info = read_json_object(path)
    if not isinstance(info.get("splits"), dict) or not all(
            isinstance(s, dict) and isinstance(s.get("files"), list) for s in info["splits"].values()):
        raise UserError(f"{path}: not a {NAME} written by `langgraft data prepare` (no splits with files)")
    return info
