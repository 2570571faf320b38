"""The files one stage writes for a later one to read: one module per file owns its name, reading, writing and
checks; no other module spells the file's name (tests/test_architecture.py).

- `new_tokens`: `new_tokens.json` (`tokenizer extend` → `extend` → `train rows=new` → `export`).
- `langgraft_json`: `langgraft.json` (`tokenizer train` / `tokenizer extend` → `tokenizer extend --add`).
- `extend_report`: `extend_report.json` (`extend` → `export`, the adapter's README) and, under its own name,
  `tokenizer_extend_report.json` (`tokenizer extend`'s report).
- `dataset_json`: `dataset.json` (`data prepare` → `train`, `tokenizer train`/`report`, the run report, the card).
- `results_json`: `results.json` (`eval` → `eval --compare`, the run report, the model card).
- `summary_json`: `summary.json` (the run report → `langgraft run`'s last lines, the model card).
"""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_if_present(src: str | Path, dst: Path, name: str) -> bool:
    """Copy `src/name` into `dst` when there is one; whether it was."""
    if not (Path(src) / name).is_file():
        return False
    shutil.copy2(Path(src) / name, dst / name)
    return True
