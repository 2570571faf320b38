"""`langgraft tokenizer report`: real tokenizers, real text, json/md/png outputs, sweep, bad input."""

from __future__ import annotations

import json

import pytest

from langgraft.cli import main
from helpers import news_texts


@pytest.fixture(scope="module")
def texts(data_dir, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("texts")
    fa = news_texts(data_dir, "news/fars-news-2.json", 12, fields=("title", "paragraphs"))
    (root / "fa.txt").write_text("\n".join(fa) + "\n", encoding="utf-8")
    quran_en = (data_dir / "parsinlu/data/translation/quran/en.arberry.txt").read_text("utf-8").splitlines()[:150]
    (root / "en.txt").write_text("\n".join(quran_en) + "\n", encoding="utf-8")
    return {"fa": str(root / "fa.txt"), "en": str(root / "en.txt")}


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["tokenizer", "report", *argv])
    return code, capsys.readouterr().err


def test_report_writes_json_markdown_and_chart(data_dir, texts, tmp_path, capsys):
    out = tmp_path / "report"
    code, err = _run(capsys, "--tokenizer", f"gpt2={data_dir / 'tokenizers/gpt2'}",
                     f"qwen2={data_dir / 'tokenizers/qwen2'}",
                     "--text", f"fa={texts['fa']}", f"en={texts['en']}", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert list(report["results"]) == ["fa", "en"]
    fa, en = report["results"]["fa"], report["results"]["en"]
    assert set(fa) == {"gpt2", "qwen2"}
    assert fa["gpt2"]["fertility"] > 1.5 * fa["qwen2"]["fertility"]  # Qwen2's 151k vocab covers Persian
    assert en["gpt2"]["fertility"] < 1.6 and en["gpt2"]["byte_fallback_rate"] == 0
    assert report["tokenizers"]["qwen2"]["vocab_size"] > 150_000
    md = (out / "report.md").read_text("utf-8")
    assert "## fa" in md and "## en" in md
    row = next(line for line in md.splitlines() if line.startswith("| gpt2 |") and "byte-level" in line)
    assert f"{fa['gpt2']['fertility']:.3f}" in row
    assert (out / "fertility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "manifest.json").read_text("utf-8"))["stage"] == "tokenizer-report"


def test_report_normalize_applies_the_language_normaliser(data_dir, texts, tmp_path, capsys):
    out = tmp_path / "norm"
    code, err = _run(capsys, "--tokenizer", f"gpt2={data_dir / 'tokenizers/gpt2'}", "--text", f"fa={texts['fa']}",
                     "--normalize", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["normalize"] is True
    # Fars News writes Arabic ي/ك; the Persian normaliser maps them to ی/ک, which changes the character stream
    raw = open(texts["fa"], encoding="utf-8").read()
    assert "ي" in raw or "ك" in raw
    assert report["texts"]["fa"]["normalized_lines_changed"] > 0
    plain = tmp_path / "plain"
    assert _run(capsys, "--tokenizer", f"gpt2={data_dir / 'tokenizers/gpt2'}", "--text", f"fa={texts['fa']}",
                "--out", str(plain))[0] == 0
    assert json.loads((plain / "report.json").read_text("utf-8"))["texts"]["fa"]["normalized_lines_changed"] == 0


@pytest.mark.parametrize("argv, expected", [
    (["--tokenizer", "gpt2", "--text", "fa={fa}"], "--tokenizer 'gpt2': expected NAME=PATH"),
    (["--tokenizer", "a={gpt2}", "a={gpt2}", "--text", "fa={fa}"], "given twice"),
    (["--tokenizer", "a=/nonexistent/tok", "--text", "fa={fa}"], "--tokenizer a=/nonexistent/tok: not found"),
    (["--tokenizer", "a={gpt2}", "--text", "fa=/nonexistent/fa.txt"], "--text fa=/nonexistent/fa.txt: file not found"),
    (["--tokenizer", "a={fa}", "--text", "fa={fa}"], "--tokenizer a="),
    (["--tokenizer", "a={gpt2}", "--text", "fa={fa}", "--sweep", "100"], "--sweep needs --sweep-train"),
    (["--tokenizer", "a={gpt2}", "--text", "fa={fa}", "--sweep", "100", "--sweep-train", "{fa}", "--lang", "fa",
      "--sweep-base", "b"], "--sweep-base b: not one of the --tokenizer names"),
    (["--tokenizer", "a={gpt2}", "--text", "xx={fa}", "--normalize"], "--text xx="),
])
def test_bad_input_is_one_line_exit_2_and_no_output(data_dir, texts, tmp_path, capsys, argv, expected):
    argv = [a.format(gpt2=data_dir / "tokenizers/gpt2", fa=texts["fa"]) for a in argv]
    out = tmp_path / "out"
    code, err = _run(capsys, *argv, "--out", str(out))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("langgraft: error: ") and expected in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sweep_tabulates_size_added_and_fertility(data_dir, texts, tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("\n".join(news_texts(data_dir, "news/fars-news-3.json", 120, fields=("paragraphs",))),
                     encoding="utf-8")
    out = tmp_path / "sweep"
    code, err = _run(capsys, "--tokenizer", f"gpt2={data_dir / 'tokenizers/gpt2'}",
                     "--text", f"fa={texts['fa']}", f"en={texts['en']}",
                     "--sweep", "400,1200", "--sweep-train", str(train), "--lang", "fa", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text("utf-8"))
    small, big = report["sweep"]
    assert (small["size"], big["size"]) == (400, 1200)
    assert 0 < small["added"] < big["added"]
    assert big["vocab_size"] == report["tokenizers"]["gpt2"]["vocab_size"] + big["added"]
    base_fa = report["results"]["fa"]["gpt2"]["fertility"]
    assert big["fertility"]["fa"] < small["fertility"]["fa"] < base_fa
    assert small["unchanged"] == big["unchanged"] == {"en": 1.0}  # English keeps the base's ids
    assert "fa" not in small["unchanged"]
    assert (out / "sweep.png").is_file() and (out / "sweep/extended-1200/tokenizer.json").is_file()
    assert "## Sweep" in (out / "report.md").read_text("utf-8")


def test_prepared_dataset_text_is_its_validation_split(data_dir, texts, tmp_path, capsys):
    """`--text fa=DIR` measures a `data prepare` dataset's held-out validation split (`DIR:SPLIT` another): the
    same numbers as the same texts given as a .txt file."""
    from helpers import make_dataset

    lines = open(texts["fa"], encoding="utf-8").read().splitlines()
    make_dataset(tmp_path / "data", "fa_mono", lines[:5], lines)
    tok = f"gpt2={data_dir / 'tokenizers/gpt2'}"
    runs = {"file": f"fa={texts['fa']}", "dir": f"fa={tmp_path / 'data/fa_mono'}",
            "split": f"fa={tmp_path / 'data/fa_mono'}:validation", "train": f"fa={tmp_path / 'data/fa_mono'}:train"}
    results = {}
    for name, text in runs.items():
        code, err = _run(capsys, "--tokenizer", tok, "--text", text, "--out", str(tmp_path / name))
        assert code == 0, err
        results[name] = json.loads((tmp_path / name / "report.json").read_text("utf-8"))["results"]["fa"]
    assert results["file"] == results["dir"] == results["split"] != results["train"]
