"""Shared fixtures. Tests read real data from ../shared/data in place (override with LANGGRAFT_DATA).

When that data is missing the tests that need it fail loudly instead of skipping: CI always has it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("LANGGRAFT_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "MANIFEST.tsv").is_file():
        pytest.fail(f"shared test data not found at {root} (set LANGGRAFT_DATA)")
    return root


def pytest_terminal_summary(terminalreporter, config) -> None:
    """The random order's seed, also under -q (which hides pytest-randomly's header line): a failure that only
    one order shows is repeated with it."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and config.pluginmanager.hasplugin("randomly"):
        terminalreporter.write_line(f"random order: --randomly-seed={seed} repeats it")
