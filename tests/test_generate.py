"""langgraft.model.generation and `langgraft generate`: batching never changes greedy output, seeds reproduce samples,
a killed or torn output file resumes without losing or repeating a line, bad input lines are counted or stop
the run, long prompts are cut with a count, chats go through the template, adapters equal their merged model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.cli import main
from langgraft.model.generation import Sampling, generate_texts
from langgraft.model.load import chat_text, load_model_or_adapter as load
from helpers import english_lines, load_base_tokenizer, persian_lines, save_tiny_model


@pytest.fixture(scope="module", params=["mistral", "qwen2"])
def tiny(request, data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"gen-{request.param}")
    tok = load_base_tokenizer(data_dir, request.param, tmp / "tok")
    return save_tiny_model("llama", tok, tmp / "model", hidden=32, layers=2)


@pytest.fixture(scope="module")
def mistral(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen-mistral")
    return save_tiny_model("llama", load_base_tokenizer(data_dir, "mistral", tmp / "tok"), tmp / "model")


def _prompts(data_dir, n: int) -> list[str]:
    fa, en = persian_lines(data_dir, n), english_lines(data_dir, n)
    return [(fa if i % 2 else en)[i][: 20 + 7 * (i % 9)] for i in range(n)]  # mixed lengths: real padding


def test_greedy_batched_equals_one_at_a_time(tiny, data_dir):
    model, tok = load(str(tiny))
    prompts = _prompts(data_dir, 10)
    s = Sampling(max_new_tokens=8)
    batched = generate_texts(model, tok, prompts, s, batch_size=4)
    alone = [generate_texts(model, tok, [p], s)[0] for p in prompts]
    assert batched == alone
    assert len({r["text"] for r in alone}) > 5
    # one at a time is transformers' own greedy decoding with the same repetition penalty
    ids = tok(prompts[3], return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, repetition_penalty=1.1,
                             pad_token_id=tok.pad_token_id)
    assert alone[3]["text"] == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)


def test_a_fixed_seed_reproduces_sampled_output(mistral, data_dir):
    model, tok = load(str(mistral))
    prompts = _prompts(data_dir, 6)
    s = Sampling(max_new_tokens=10, temperature=1.0, top_p=0.95, top_k=50, seed=7)
    first = generate_texts(model, tok, prompts, s, batch_size=3)
    assert generate_texts(model, tok, prompts, s, batch_size=3) == first
    other = generate_texts(model, tok, prompts, Sampling(**{**s.__dict__, "seed": 8}), batch_size=3)
    greedy = generate_texts(model, tok, prompts, Sampling(max_new_tokens=10), batch_size=3)
    assert other != first and greedy != first


def _write_inputs(path, data_dir, n: int) -> list[str]:
    prompts = _prompts(data_dir, n)
    path.write_text("".join(json.dumps({"prompt": p, "id": f"p{i}"}, ensure_ascii=False) + "\n"
                            for i, p in enumerate(prompts)), encoding="utf-8")
    return prompts


def _cli(model, inp, out, *extra) -> int:
    return main(["generate", "--model", str(model), "--input", str(inp), "--out", str(out),
                 "--max-new-tokens", "6", *extra])


def test_generate_resumes_after_a_kill_without_losing_or_repeating_a_line(mistral, data_dir, tmp_path):
    inp, ref = tmp_path / "in.jsonl", tmp_path / "ref.jsonl"
    prompts = _write_inputs(inp, data_dir, 40)
    assert _cli(mistral, inp, ref) == 0
    lines = ref.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["line"] for x in lines] == list(range(1, 41))
    assert [json.loads(x)["id"] for x in lines] == [f"p{i}" for i in range(40)]
    # killed for real, mid-run (batches of 1: windows of 8 lines reach the disk one by one)
    killed = tmp_path / "killed.jsonl"
    cmd = [sys.executable, "-m", "langgraft", "generate", "--model", str(mistral), "--input", str(inp), "--out",
           str(killed), "--max-new-tokens", "6", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline and not (killed.exists() and killed.stat().st_size):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = killed.read_text(encoding="utf-8").count("\n")
    assert 0 < at_kill < 40
    # and a torn last line, as a kill in the middle of a write leaves it
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[:3]) + "\n" + lines[3][:17], encoding="utf-8")
    (tmp_path / "torn.jsonl.settings.json").write_bytes((tmp_path / "ref.jsonl.settings.json").read_bytes())
    for out in (killed, torn):
        assert _cli(mistral, inp, out) == 0
        assert out.read_text(encoding="utf-8").splitlines() == lines, out.name
    assert len(prompts) == 40 and _cli(mistral, inp, torn) == 0  # a finished file: nothing to do


def test_a_rerun_with_other_settings_is_refused(mistral, data_dir, tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_inputs(inp, data_dir, 3)
    assert _cli(mistral, inp, out) == 0
    capsys.readouterr()
    assert _cli(mistral, inp, out, "--temperature", "0.7") == 2
    err = capsys.readouterr().err.strip()
    assert "--temperature: 0.0 → 0.7" in err and "\n" not in err
    (tmp_path / "foreign.jsonl").write_text("{}\n")
    assert _cli(mistral, inp, tmp_path / "foreign.jsonl") == 2
    assert "not written by `langgraft generate`" in capsys.readouterr().err


def test_bad_lines_are_skipped_and_counted_or_stop_a_strict_run(mistral, tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"prompt": "سلام"}\nnot json\n{"text": "x"}\n[1, 2]\n{"prompt": 5}\n{"prompt": "Hello"}\n',
                   encoding="utf-8")
    assert _cli(mistral, inp, out) == 0
    summary = capsys.readouterr().out
    assert "skipped bad_field 1, missing_field 1, not_an_object 1, not_json 1" in summary
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r.get("skipped") for r in rows] == [None, "not_json", "missing_field", "not_an_object", "bad_field", None]
    assert rows[1]["error"].endswith("in.jsonl:2: not JSON (Expecting value)") and "output" in rows[5]
    for bad, line in (("not json", 2), ('{"text": "x"}', 2), ('{"prompt": ""}', 2)):
        inp.write_text('{"prompt": "ok"}\n' + bad + "\n", encoding="utf-8")
        strict = tmp_path / f"strict{line}.jsonl"
        assert _cli(mistral, inp, strict, "--strict") == 2
        err = capsys.readouterr().err.strip()
        assert f"in.jsonl:{line}:" in err and "\n" not in err and not strict.exists()


def test_a_prompt_longer_than_the_context_loses_its_start_with_a_count(mistral, data_dir, tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    long = " ".join(persian_lines(data_dir, 60))  # well over the tiny model's 512 positions
    inp.write_text(json.dumps({"prompt": long}) + "\n" + json.dumps({"prompt": "short"}) + "\n", encoding="utf-8")
    assert _cli(mistral, inp, out) == 0
    assert "1 prompt(s) cut from the left" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    tok = AutoTokenizer.from_pretrained(mistral)
    assert rows[0]["truncated_tokens"] == len(tok(long).input_ids) - (512 - 6) and rows[1]["truncated_tokens"] == 0


def test_chat_lines_go_through_the_template(mistral, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    chat = [{"role": "user", "content": "سلام"}, {"role": "assistant", "content": "سلام!"},
            {"role": "user", "content": "حالت چطور است؟"}]
    bad = [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]  # Mistral's template refuses
    inp.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in (chat, "سلام", bad, 3)),
                   encoding="utf-8")
    assert _cli(mistral, inp, out, "--chat", "--field", "messages") == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    model, tok = load(str(mistral))
    s = Sampling(max_new_tokens=6)
    prompts = [chat_text(tok, chat), chat_text(tok, [{"role": "user", "content": "سلام"}])]
    expected = generate_texts(model, tok, prompts, s)
    assert [r.get("output") for r in rows[:2]] == [e["text"] for e in expected]
    assert [r.get("skipped") for r in rows[2:]] == ["chat_template_rejected", "bad_field"]
    assert rows[2]["error"].startswith(f"--input {inp}:3: the chat template rejects this chat")


def test_strict_stops_at_a_chat_the_template_rejects_and_progress_shows_tokens_per_second(mistral, tmp_path,
                                                                                            capsys):
    from langgraft.generate.batch import GenerateOptions, run_generate

    inp = tmp_path / "in.jsonl"
    bad = [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]
    inp.write_text(json.dumps({"prompt": "سلام"}) + "\n" + json.dumps({"prompt": bad}) + "\n", encoding="utf-8")
    assert _cli(mistral, inp, tmp_path / "strict.jsonl", "--chat", "--strict") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the library's weight-loading bar)
    assert err.startswith(f"langgraft: error: --input {inp}:2: the chat template rejects this chat")
    counts = run_generate(str(mistral), str(inp), str(tmp_path / "bar.jsonl"), Sampling(max_new_tokens=4),
                          GenerateOptions(chat=True), progress=True)
    assert counts["written"] == 2 and counts["skipped"] == {"chat_template_rejected": 1}
    bar = capsys.readouterr().err
    assert "2/2" in bar and "tok_s=" in bar and ("line/s" in bar or "s/line" in bar)


def test_an_adapter_generates_what_its_merged_model_does(mistral, data_dir, tmp_path):
    import peft

    base = AutoModelForCausalLM.from_pretrained(mistral)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn_like(p)  # a trained-looking adapter: it changes the output
    lora.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(mistral).save_pretrained(tmp_path / "adapter")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(mistral).save_pretrained(tmp_path / "merged")
    prompts = _prompts(data_dir, 4)
    s = Sampling(max_new_tokens=6)
    merged = generate_texts(*load(str(tmp_path / "merged")), prompts, s)
    assert generate_texts(*load(str(tmp_path / "adapter")), prompts, s) == merged
    assert generate_texts(*load(str(tmp_path / "adapter"), base=str(mistral)), prompts, s) == merged
    assert generate_texts(*load(str(mistral)), prompts, s) != merged


def test_generation_stops_at_every_end_token_the_model_names(mistral, data_dir):
    from langgraft.model.generation import generate_ids

    model, tok = load(str(mistral))
    ids = tok(_prompts(data_dir, 3)[2]).input_ids
    s = Sampling(max_new_tokens=8)
    free = generate_ids(model, tok, [ids], s)[0]
    assert len(free) == 8 and tok.eos_token_id not in free
    end_of_turn = free[3]  # as a chat model's generation_config lists an end-of-turn token besides EOS
    model.generation_config.eos_token_id = [tok.eos_token_id, end_of_turn]
    assert generate_ids(model, tok, [ids], s)[0] == free[:free.index(end_of_turn) + 1]
