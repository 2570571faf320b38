"""`langgraft tokenizer train` on real Persian news: ZWNJ survives, digits split, byte fallback, bad input."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from langgraft.cli import main
from langgraft.lang import get_language
from langgraft.tokenizer.train import MAX_SENTENCE_BYTES, _sentences, train_tokenizer
from helpers import news_texts

ZWNJ = "\u200c"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A 600-piece BPE on ~200 KB of Fars news given as .jsonl, with a few records to be skipped."""
    tmp = tmp_path_factory.mktemp("train")
    texts = news_texts(data_dir, "news/fars-news-3.json", 60)
    lines = [json.dumps({"text": t, "id": i}, ensure_ascii=False) for i, t in enumerate(texts)]
    lines[5:5] = ["", "   ", json.dumps({"text": None}), json.dumps({"text": "\u0640\u064e"})]  # skipped records
    corpus = tmp / "news.jsonl"
    corpus.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")  # with a BOM, as editors save it
    out = tmp / "tok"
    result = train_tokenizer([corpus], lang="fa", vocab_size=600, out=out)
    return {"result": result, "out": out, "texts": texts, "corpus": corpus,
            "sp": spm.SentencePieceProcessor(model_file=str(result.path / "sp.model"))}


def test_writes_sp_model_vocab_langgraft_json_report_and_manifest(trained):
    out, result = trained["out"], trained["result"]
    assert result.path == out and (out / "sp.model").is_file() and result["vocab_size"] == 600
    for name in ("sp.model", "sp.vocab", "langgraft.json", "train_report.json", "manifest.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "langgraft.json").read_text())
    assert meta == {"lang": "fa", "normalizer": get_language("fa").normalizer_config, "model_type": "bpe",
                    "vocab_size": 600}
    assert get_language(meta["lang"], **meta["normalizer"]).normalizer_config == meta["normalizer"]
    report = json.loads((out / "train_report.json").read_text())
    assert report["skipped"] == {"empty_line": 2, "null_field": 1, "empty_after_normalize": 1}
    assert report["records"] == len(trained["texts"]) + 1  # + the tatweel-only record
    assert report["records_used"] == len(trained["texts"])
    assert not (out / "corpus.txt").exists()  # the normalised temp corpus is not published


def test_model_was_trained_on_normalised_text(trained):
    sp = trained["sp"]
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    raw = "".join(trained["texts"])
    assert raw.count("ي") > 100  # Fars news spells yeh the Arabic way ...
    assert not any("ي" in p or "ك" in p for p in pieces)  # ... the model only knows the Persian letters
    assert any("ی" in p for p in pieces) and any("ک" in p for p in pieces)


def test_zwnj_survives_round_trip(trained):
    sp, fa = trained["sp"], get_language("fa")
    assert any(ZWNJ in sp.id_to_piece(i) for i in range(sp.get_piece_size()))
    with_zwnj = [fa.normalize(t) for t in trained["texts"] if ZWNJ in fa.normalize(t)][:50]
    assert len(with_zwnj) == 50
    for text in with_zwnj + [f"آن{ZWNJ}ها می{ZWNJ}روند و کتاب{ZWNJ}ها را می{ZWNJ}خوانند"]:
        ids = sp.encode(text)
        assert sp.decode(ids) == text
        assert "".join(sp.id_to_piece(ids)).count(ZWNJ) == text.count(ZWNJ)


def test_digits_split_and_byte_fallback(trained):
    sp = trained["sp"]
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_byte(i)]
    assert sum(p.strip("▁").isdigit() for p in pieces) >= 10  # digits are in the vocabulary, one per piece
    assert not any(sum(ch.isdigit() for ch in p) > 1 for p in pieces)
    text = "سال ۱۴۰۲ و 2023 و ۱۳۹۹"
    ids = sp.encode(text)
    used = [sp.id_to_piece(i) for i in ids if not sp.is_byte(i)]  # rare digits may fall back to bytes
    assert sum(p.strip("▁").isdigit() for p in used) >= 8
    assert not any(sum(ch.isdigit() for ch in p) > 1 for p in used)
    assert sp.decode(ids) == text
    unseen = "سلام 𝄞 世"  # characters the corpus never had
    ids = sp.encode(unseen)
    assert sp.unk_id() not in ids
    assert "<0xF0>" in sp.id_to_piece(ids)  # first byte of U+1D11E
    assert sp.decode(ids) == unseen


def test_rerun_with_same_inputs_is_skipped(trained):
    again = train_tokenizer([trained["corpus"]], lang="fa", vocab_size=600, out=trained["out"])
    assert again.skipped is True and again.path == trained["result"].path


def test_cli_txt_unigram_and_normalizer_options(tmp_path, data_dir, capsys):
    corpus = tmp_path / "sports.txt"  # sports news: scores, dates and minutes, many digits
    corpus.write_text("\n".join(news_texts(data_dir, "sports/varzesh3-2.json", 80)) + "\n\n", encoding="utf-8")
    out = tmp_path / "uni"
    rc = main(["tokenizer", "train", "--input", str(corpus), "--lang", "fa", "--vocab-size", "700",
               "--model-type", "unigram", "--normalizer", "digits=latin", "zwnj_repair=false", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "langgraft.json").read_text())
    assert meta["model_type"] == "unigram" and meta["vocab_size"] == 700
    assert meta["normalizer"] == {"digits": "latin", "newlines": "keep", "zwnj_repair": False}
    sp = spm.SentencePieceProcessor(model_file=str(out / "sp.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_byte(i)]
    assert not any(ch in p for p in pieces for ch in "۰۱۲۳۴۵۶۷۸۹")  # digits=latin applied before training
    assert set("0123456789") <= {p.strip("▁") for p in pieces}
    assert not any(sum(ch.isdigit() for ch in p) > 1 for p in pieces)  # split_digits
    default = spm.SentencePieceProcessor(model_file=str(_train_default_digits(tmp_path, corpus)))
    assert default.encode("۱۴۰۲ و ١٢", out_type=str) == ["▁", "۱", "۴", "۰", "۲", "▁و", "▁", "١", "٢"]
    assert json.loads((out / "train_report.json").read_text())["skipped"] == {"empty_line": 1}


def _train_default_digits(tmp_path, corpus):
    """Default digits policy (keep): Persian and Arabic-Indic digits must still be split one per piece."""
    out = tmp_path / "keep-digits"
    assert main(["tokenizer", "train", "--input", str(corpus), "--lang", "fa", "--vocab-size", "700",
                 "--out", str(out)]) == 0
    return out / "sp.model"


def test_overlong_lines_are_cut_at_spaces_not_dropped():
    line = " ".join(["کتاب‌ها"] * 2000)  # ~26 KB
    chunks = list(_sentences(line))
    assert len(chunks) > 1 and all(len(c.encode()) <= MAX_SENTENCE_BYTES for c in chunks)
    assert " ".join(chunks) == line
    word = "ا" * 10000
    assert "".join(_sentences(word)) == word


def _bad_input_cases(tmp_path, data_dir):
    good = "\n".join(news_texts(data_dir, "news/fars-news-3.json", 20)) + "\n"
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "latin1.txt").write_bytes(good.encode() + "caf\u00e9\n".encode("latin-1"))
    bad_line = good.count("\n") + 1
    rec = json.dumps({"text": "سلام"}, ensure_ascii=False)
    (tmp_path / "broken.jsonl").write_text(f"{rec}\n{{\"text\": \"سلام\"\n")
    (tmp_path / "nofield.jsonl").write_text(f"{rec}\n{rec}\n" + json.dumps({"body": "سلام"}) + "\n")
    (tmp_path / "notstr.jsonl").write_text(json.dumps({"text": ["a"]}) + "\n")
    (tmp_path / "good.txt").write_text(good, encoding="utf-8")
    (tmp_path / "array.json").write_text(json.dumps([{"text": "سلام"}]))
    return [
        (["missing.txt"], [], "missing.txt: not found"),
        (["empty.txt"], [], "empty.txt: empty file"),
        (["blank.txt"], [], "blank.txt: no text to train on"),
        (["latin1.txt"], [], f"latin1.txt:{bad_line}: not valid UTF-8"),
        (["broken.jsonl"], [], "broken.jsonl:2: not valid JSON"),
        (["nofield.jsonl"], [], "nofield.jsonl:3: no field 'text'"),
        (["notstr.jsonl"], [], "notstr.jsonl:1: field 'text' is list"),
        (["good.txt", "array.json"], [], "array.json: .json is not read"),
        (["good.txt"], ["--vocab-size", "60000"], "--vocab-size 60000: too large for this corpus"),
        (["good.txt"], ["--vocab-size", "100"], "--vocab-size 100: too small"),
        (["good.txt"], ["--lang", "xx"], "--lang 'xx': unknown language"),
        (["good.txt"], ["--normalizer", "digit=latin"], "normalizer option 'digit' is not known"),
        (["good.txt"], ["--normalizer", "digits"], "--normalizer 'digits': expected KEY=VALUE"),
    ]


def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, data_dir, capsys):
    for names, extra, message in _bad_input_cases(tmp_path, data_dir):
        out = tmp_path / "runs" / "tok"
        argv = ["tokenizer", "train", "--input", *[str(tmp_path / n) for n in names], "--lang", "fa",
                "--vocab-size", "500", "--out", str(out)]
        for i in range(0, len(extra), 2):  # later flags override earlier ones
            argv += extra[i:i + 2]
        rc = main(argv)
        err = capsys.readouterr().err
        error_lines = [line for line in err.splitlines() if line.startswith("langgraft: error:")]
        assert rc == 2, (names, extra, err)
        assert len(error_lines) == 1 and message in error_lines[0], (message, err)
        assert not out.exists()
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no temp leftovers


def test_prepared_dataset_is_read_like_the_same_text_in_a_file(data_dir, tmp_path, capsys):
    """`--input DIR` reads a `data prepare` dataset's train split, `DIR:SPLIT` another: the same sentences as a
    .txt of the same texts; a missing split or a non-dataset folder is one error line."""
    from helpers import make_dataset

    texts = news_texts(data_dir, "news/fars-news-3.json", 30)
    held = news_texts(data_dir, "news/fars-news-5.json", 10)
    dataset = make_dataset(tmp_path / "data", "fa_mono", texts + [" "], held)  # a blank row is counted
    (tmp_path / "fa.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "held.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
    common = ["tokenizer", "train", "--lang", "fa", "--vocab-size", "500", "--threads", "1", "--out"]
    for name, source in (("txt", "fa.txt"), ("ds", "data/fa_mono"), ("held-txt", "held.txt"),
                         ("held-ds", "data/fa_mono:validation")):
        assert main([*common, str(tmp_path / name), "--input", str(tmp_path / source)]) == 0, capsys.readouterr()
    reports = {name: json.loads((tmp_path / name / "train_report.json").read_text())
               for name in ("txt", "ds", "held-txt", "held-ds")}
    for file, ds in (("txt", "ds"), ("held-txt", "held-ds")):  # the same sentences reached SentencePiece
        assert reports[file]["sentences"] == reports[ds]["sentences"]
    assert reports["ds"]["records_used"] == len(texts) and reports["held-ds"]["records_used"] == len(held)
    assert reports["ds"]["skipped"] == {"empty_text": 1}
    assert json.loads((tmp_path / "held-ds/manifest.json").read_text())["config"]["splits"] == {
        str(dataset): "validation"}
    capsys.readouterr()
    for source, needle in (("data/fa_mono:test", "no split 'test' (has: train, validation)"),
                           ("data", "not a prepared dataset")):
        assert main([*common, str(tmp_path / "bad"), "--input", str(tmp_path / source)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert not (tmp_path / "bad").exists()
