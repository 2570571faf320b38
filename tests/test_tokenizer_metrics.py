"""Tokenizer metrics on real tokenizers and real text (Persian news, SST-2)."""

from __future__ import annotations


import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from langgraft.errors import UserError
from langgraft.tokenizer import metrics
from helpers import news_texts


@pytest.fixture(scope="module")
def persian(data_dir) -> list[str]:
    return news_texts(data_dir, "news/fars-news-1.json", 25)


@pytest.fixture(scope="module")
def english(data_dir) -> list[str]:
    lines = [line.split(" ", 1)[1] for line in metrics.read_lines(data_dir / "sst2/data/stsa.binary.dev")[:200]]
    return [line for line in lines if line.isascii()]  # a few reviews have é; the bytes==chars check needs ASCII


@pytest.fixture(scope="module")
def llama2(data_dir):
    return metrics.load_tokenizer(data_dir / "tokenizers/llama2/tokenizer.model")


@pytest.fixture(scope="module")
def llama3(data_dir):
    return metrics.load_tokenizer(data_dir / "tokenizers/llama3/tokenizer.model")


@pytest.fixture(scope="module")
def gpt2(data_dir):
    return metrics.load_tokenizer(data_dir / "tokenizers/gpt2")


def test_llama2_fertility_on_persian_far_above_llama3(llama2, llama3, persian):
    m2, m3 = metrics.measure(llama2, persian), metrics.measure(llama3, persian)
    assert m2["words"] == m3["words"] == sum(len(line.split()) for line in persian)
    assert m2["fertility"] > 4.0 and m3["fertility"] < 2.5
    assert m2["fertility"] > 2 * m3["fertility"]
    # Persian letters are two UTF-8 bytes: a near character-level tokenizer sits near 1 char / ~1.8 bytes per token
    assert m2["chars_per_token"] < 1.2 and m2["bytes_per_token"] > 1.6
    assert m2["kind"] == "byte-fallback" and m3["kind"] == "byte-level"


def test_byte_fallback_rate_on_persian(llama2, llama3, gpt2, persian):
    m2, m3, mg = (metrics.measure(t, persian) for t in (llama2, llama3, gpt2))
    assert m2["byte_fallback_rate"] > 0  # Llama-2 lacks some Persian letters and spells them as <0xNN> pieces
    assert m3["byte_fallback_rate"] < 0.01  # Llama-3 has whole Persian characters for almost everything
    assert mg["byte_fallback_rate"] > 0.3  # GPT-2 splits most Persian letters into two byte tokens
    assert m2["unknown_rate"] == 0


def test_byte_piece_table_flags_the_right_tokens(llama2, gpt2):
    sp_table, bl_table = metrics.token_table(llama2), metrics.token_table(gpt2)
    assert sp_table["byte_piece"][llama2.token_to_id("<0xD8>")]
    assert not sp_table["byte_piece"][llama2.token_to_id("▁the")]
    assert sp_table["byte_piece"].sum() == 256
    assert bl_table["byte_piece"][gpt2.token_to_id("Ø")]  # the lead byte 0xD8 of Arabic letters on its own
    assert not bl_table["byte_piece"][gpt2.token_to_id("Ġthe")]
    assert not bl_table["byte_piece"][gpt2.token_to_id("<|endoftext|>")]


def test_english_has_no_byte_pieces_and_bytes_equal_chars(llama2, gpt2, english):
    for tok in (llama2, gpt2):
        m = metrics.measure(tok, english)
        assert m["byte_fallback_rate"] == 0
        assert m["bytes_per_token"] == pytest.approx(m["chars_per_token"])
        assert 1.0 < m["fertility"] < 1.6
        assert m["tokens"] == sum(len(ids) for ids in metrics.encode_lines(tok, english))


def test_unknown_rate_counts_unk_tokens(english, persian):
    # A real word-piece BPE with an unknown token, trained on English only: Persian letters are all unknown.
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(english, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    assert metrics.measure(tok, english)["unknown_rate"] == 0
    fa = metrics.measure(tok, persian[:20])
    assert fa["unknown_rate"] > 0.5 and fa["kind"] == "plain"


def test_unchanged_check(llama2, data_dir, english):
    same = metrics.unchanged(llama2, llama2, english)
    assert same == {"lines": len(english), "identical": len(english), "fraction": 1.0, "examples": []}
    mistral = metrics.load_tokenizer(data_dir / "tokenizers/mistral-7b-v0.3")
    diff = metrics.unchanged(llama2, mistral, english)
    assert diff["fraction"] < 0.5  # Mistral v0.3 reserves 768 more control ids, so ids shift
    first = diff["examples"][0]
    assert first["a"] != first["b"] and first["text"] == english[first["line"] - 1][:200]


def test_throughput_wall_and_cpu_clock(gpt2, english):
    assert metrics.throughput(gpt2, english, repeats=1) > 1000
    assert metrics.throughput(gpt2, english, repeats=2, cpu=True) > 1000


def test_read_lines_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("خوب\n".encode() + b"\xff\xfe oops\n")
    with pytest.raises(UserError, match=r"bad.txt:2: not valid UTF-8"):
        metrics.read_lines(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        metrics.read_lines(empty)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "سلام"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"t.jsonl:2: .*'text'"):
        metrics.read_lines(jsonl)
    jsonl.write_text('{"text": "سلام"}\n\n{"text": "دنیا"}\n', encoding="utf-8")
    assert metrics.read_lines(jsonl) == ["سلام", "دنیا"]
    with pytest.raises(UserError, match="not found"):
        metrics.read_lines(tmp_path / "missing.txt")


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        metrics.load_tokenizer(tmp_path / "nope")
    junk = tmp_path / "tokenizer.model"
    junk.write_text("not a model\n", encoding="utf-8")
    with pytest.raises(UserError, match="tokenizer.model"):
        metrics.load_tokenizer(junk)
