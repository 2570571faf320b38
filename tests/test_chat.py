"""`langgraft chat`: greedy replies through the chat template, conversation history, /reset, plain mode, errors."""

from __future__ import annotations

import io
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.chat import ChatOptions, run_chat
from langgraft.cli import main
from test_train_support import copy_without_chat_template, make_extended_model


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("chat")
    chat = make_extended_model(tmp, data_dir)  # Mistral-7B-v0.3's tokenizer: an [INST] chat template
    return chat, copy_without_chat_template(chat, tmp / "plain")


def _greedy(path, text: str, n: int) -> tuple[str, int]:
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip(), ids.shape[1]


def test_one_prompt_is_answered_through_the_template(models, capsys):
    chat, _ = models
    assert main(["chat", "--model", str(chat), "--prompt", "پایتخت ایران کجاست؟", "--max-new-tokens", "6",
                 "--json"]) == 0
    turn = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the tokenizer adds BOS itself, so the template's BOS text is not written twice
    expected, n_ctx = _greedy(chat, "[INST] پایتخت ایران کجاست؟[/INST]", 6)
    assert turn["chat_template"] and turn["reply"] == expected and turn["context_tokens"] == n_ctx
    assert turn["new_tokens"] == 6


def test_a_conversation_keeps_history_until_reset(models):
    chat, _ = models
    out = io.StringIO()
    turns = run_chat(str(chat), ChatOptions(max_new_tokens=4, json=True),
                     stdin=io.StringIO("سلام\nحالت چطور است؟\n/reset\nحالت چطور است؟\n/exit\nignored\n"),
                     stdout=out)
    assert [t["prompt"] for t in turns] == ["سلام", "حالت چطور است؟", "حالت چطور است؟"]
    tok = AutoTokenizer.from_pretrained(chat)
    history = [{"role": "user", "content": "سلام"}, {"role": "assistant", "content": turns[0]["reply"]}]
    second = tok.apply_chat_template([*history, {"role": "user", "content": "حالت چطور است؟"}], tokenize=False,
                                     add_generation_prompt=True)
    assert turns[1]["context_tokens"] == len(tok(second.removeprefix(tok.bos_token))["input_ids"])
    assert turns[2]["context_tokens"] < turns[1]["context_tokens"]  # /reset: the same question without history
    assert [json.loads(line)["reply"] for line in out.getvalue().splitlines()] == [t["reply"] for t in turns]


def test_a_model_without_template_continues_plain_text(models):
    _, plain = models
    out = io.StringIO()
    turns = run_chat(str(plain), ChatOptions(max_new_tokens=5), stdin=io.StringIO("امروز هوا\nامروز هوا\n"),
                     stdout=out)
    expected, n_ctx = _greedy(plain, "امروز هوا", 5)
    assert [t["reply"] for t in turns] == [expected, expected]  # no history in plain mode
    assert turns[0]["context_tokens"] == n_ctx and not turns[0]["chat_template"]
    assert out.getvalue().splitlines() == [expected, expected]


def test_bad_input_is_one_line(tmp_path, models, capsys):
    assert main(["chat", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langgraft: error: cannot load model") and "\n" not in err
    assert main(["chat", "--model", str(models[0]), "--prompt", "x", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens" in capsys.readouterr().err
