"""Text per second: `langgraft generate` and eval report characters per second and per token counted from the
decoded text, and the share of generated ids that are new-vocabulary tokens."""

from __future__ import annotations

import json
import re

import pytest

from langgraft.cli import main
from langgraft.eval.speed import generation_speed, new_token_ids, rates
from langgraft.model.generation import Sampling, generate_texts
from langgraft.model.load import load_model_or_adapter
from helpers import english_lines, make_extended_model, persian_lines


@pytest.fixture(scope="module")
def grafted(tmp_path_factory, data_dir):
    """A tiny extended Llama (mistral tokenizer + 40 Persian words, new_tokens.json beside it)."""
    return make_extended_model(tmp_path_factory.mktemp("payoff"), data_dir)


def test_generate_reports_characters_per_second_from_the_decoded_text(grafted, data_dir, tmp_path, capsys):
    prompts = persian_lines(data_dir, 6) + english_lines(data_dir, 6)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p[:60]}, ensure_ascii=False) + "\n" for p in prompts),
                   encoding="utf-8")
    assert main(["generate", "--model", str(grafted), "--input", str(inp), "--out", str(out),
                 "--max-new-tokens", "12", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    chars, tokens = sum(len(r["output"]) for r in rows), sum(r["new_tokens"] for r in rows)
    m = re.search(r"generated ([\d,]+) tokens, ([\d,]+) characters in ([\d.]+) s: ([\d,.]+) characters/s, "
                  r"([\d,.]+) tokens/s, ([\d.]+) characters/token(?:, (\d+)% new-vocabulary ids)?", printed)
    assert m, printed
    assert int(m[1].replace(",", "")) == tokens and int(m[2].replace(",", "")) == chars
    assert float(m[6]) == pytest.approx(chars / tokens, abs=0.006)
    chars_s, tokens_s = float(m[4].replace(",", "")), float(m[5].replace(",", ""))
    assert float(m[3]) > 0 and chars_s / tokens_s == pytest.approx(chars / tokens, rel=0.01)
    # the share of new ids, counted independently on the same greedy generations
    model, tok = load_model_or_adapter(str(grafted), "cpu")
    again = generate_texts(model, tok, [p[:60] for p in prompts], Sampling(max_new_tokens=12), 4)
    assert [o["text"] for o in again] == [r["output"] for r in rows]
    new = new_token_ids(grafted)
    share = sum(i in new for o in again for i in o["ids"]) / tokens
    assert len(new) == 40 and (m[7] is None and share == 0 or int(m[7]) == round(100 * share))


def test_generation_speed_counts_decoded_characters_not_tokens():
    outputs = [{"text": "سلام دنیا", "ids": [5, 900, 901]}, {"text": "hi", "ids": [7, 8]}]
    s = generation_speed(outputs, 2.0, frozenset({900, 901}))
    assert (s["chars"], s["tokens"], s["chars_per_s"], s["tokens_per_s"]) == (11, 5, 5.5, 2.5)
    assert s["chars_per_token"] == 2.2 and s["new_vocab_share"] == 0.4
    assert rates(0, 0, 0.0)["chars_per_token"] is None


def test_eval_records_text_per_second_per_task(grafted, data_dir, tmp_path):
    from langgraft.eval.options import EvalOptions
    from langgraft.eval.run import run_eval

    lines = persian_lines(data_dir, 8)
    (tmp_path / "fa.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines),
                                       encoding="utf-8")
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps({"q": t[:30], "a": t[30:60]}, ensure_ascii=False) + "\n"
                                                for t in lines), encoding="utf-8")
    (tmp_path / "bpc.yaml").write_text("name: t_bpc\nlang: fa\nkind: intrinsic\ndata: {path: fa.jsonl}\n"
                                       "text: text\nmetrics: [bpc]\n", encoding="utf-8")
    (tmp_path / "gen.yaml").write_text("name: t_gen\nlang: fa\nkind: generate\ndata: {path: gen.jsonl}\n"
                                       "fields: {q: q}\nprompt: '{q}'\ntarget: a\nmetrics: [rougeL]\n"
                                       "max_new_tokens: 8\n",
                                       encoding="utf-8")
    doc = run_eval({"grafted": str(grafted)}, [str(tmp_path / "bpc.yaml"), str(tmp_path / "gen.yaml")],
                   tmp_path / "eval", EvalOptions(device="cpu"), data_root=str(tmp_path)).data
    bpc, gen = doc["speed"]["grafted"]["t_bpc"], doc["speed"]["grafted"]["t_gen"]
    assert bpc["kind"] == "intrinsic" and bpc["chars"] == sum(map(len, lines)) and bpc["tokens"] > 0
    samples = [json.loads(x) for x in (tmp_path / "eval/samples/t_gen.jsonl").read_text().splitlines()]
    assert gen["kind"] == "generate" and gen["new_vocab_share"] is not None
    assert gen["chars"] >= sum(len(s["prediction"]) for s in samples)  # predictions are the stripped outputs
    assert "## Text per second" in (tmp_path / "eval/report.md").read_text(encoding="utf-8")
