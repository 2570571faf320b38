"""`OUT/langgraft.log`: the console text of every verb run into a folder, without progress-bar frames."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from langgraft.cli import main
from langgraft.consolelog import LOG, capture, terminal_text
from langgraft.rundir import run_stage, sha256_path
from helpers import ASSETS


def test_terminal_text_keeps_what_a_terminal_shows():
    cases = {
        "plain\nlines\n": "plain\nlines\n",
        "\r 10%|#   | 1/10\r 50%|#####  | 5/10\r100%|########| 10/10\n": "100%|########| 10/10\n",
        "frame one that is long\rshort\n": "short one that is long\n",  # a terminal overwrites, no clearing
        "before\n\rbar 1\rbar 2\r          \rafter\n": "before\nafter\n",  # a cleared bar (leave=False) goes
        "\x1b[A\x1b[32mgreen\x1b[0m\n": "green\n",
        "kept\n\nblank line kept\n": "kept\n\nblank line kept\n",
    }
    for raw, shown in cases.items():
        assert terminal_text(raw) == shown, raw


def test_capture_collapses_a_real_bar_written_in_pieces(capsys):
    with capture() as captured:
        print("tokenizing 40 documents")
        for _ in tqdm(range(40), file=sys.stderr, mininterval=0, ascii=True, desc="tokenizing"):
            pass
        sys.stderr.write("partial ")
        sys.stderr.write("line\rfinal, longer line\n")
        print("no newline at the end", end="")
    text = "".join(captured)
    assert "\r" not in text
    assert text.count("tokenizing") == 2 and "40/40" in text and " 1/40" not in text
    assert "\nfinal, longer line\n" in text and text.endswith("no newline at the end\n")
    console = capsys.readouterr()
    assert console.err.count("\r") > 40  # the console itself still got every frame


def test_each_output_folder_gets_the_console_text(tmp_path, capsys):
    out = tmp_path / "fa-sp"
    args = ["tokenizer", "train", "--input", str(ASSETS / "fa.txt"), "--lang", "fa", "--vocab-size", "400", "--out",
            str(out)]
    assert main(args) == 0
    digest = sha256_path(out)
    first = (out / LOG).read_text(encoding="utf-8")
    console = capsys.readouterr()
    assert f"langgraft {' '.join(args)} (exit 0" in first
    for line in (console.out + console.err).splitlines():
        assert line in first
    assert "wrote " in first and "trained 400 pieces" in first

    assert main(args) == 0  # a skipped rerun appends; the folder's hash (what downstream stages see) is unchanged
    log = (out / LOG).read_text(encoding="utf-8")
    assert log.startswith(first) and "up to date, skipped" in log[len(first):]
    assert sha256_path(out) == digest


def _other_stage(folder: Path) -> None:  # another verb's finished output
    run_stage(folder, stage="data prepare", config={}, inputs=[], work=lambda tmp: None)


def _foreign_with_marker(folder: Path) -> None:  # a folder langgraft did not write, holding a file named like a marker
    folder.mkdir()
    (folder / "manifest.json").write_text("{not langgraft's", encoding="utf-8")
    (folder / "train_config.json").write_text("{}", encoding="utf-8")


def _foreign(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("x")


@pytest.mark.parametrize("verb", ["tokenizer", "train"])
@pytest.mark.parametrize("make", [_other_stage, _foreign_with_marker, _foreign, None])
def test_a_refused_or_failed_out_gets_no_log(tmp_path, make, verb, capsys):
    """The log goes only where the verb accepted its output: never into a folder it refused (each verb decides
    that in its own place: rundir for stage outputs, the run-folder check for `train`), and a failed start that
    leaves no folder creates none."""
    corpus = tmp_path / "fa.txt"
    corpus.write_text("یک متن کوتاه فارسی\n" * 20, encoding="utf-8")
    dataset = tmp_path / "ds"
    dataset.mkdir()
    (dataset / "dataset.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "out"
    if make is not None:
        make(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None
    if verb == "tokenizer":  # with no folder there, a bad flag fails the start instead
        args = ["tokenizer", "train", "--input", str(corpus), "--lang", "fa", "--vocab-size",
                "300" if make else "0", "--out", str(out)]
    else:  # with no folder there, a missing model fails the start instead
        args = ["train", "--stage", "align", f"model={tmp_path / 'ds' if make else tmp_path / 'none'}",
                f"data.dataset={dataset}", "--out", str(out)]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("langgraft: error: ")
    after = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None
    assert after == before and not (out / LOG).exists()
