"""`langgraft chat`: greedy replies through the chat template, conversation history, /reset, plain mode, errors."""

from __future__ import annotations

import io
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.generate.chat import ChatOptions, run_chat
from langgraft.cli import main
from langgraft.model.generation import Sampling
from helpers import copy_without_chat_template, make_extended_model, persian_lines


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
        out = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id,
                             repetition_penalty=1.1)  # the default of langgraft.model.generation
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
    turns = run_chat(str(chat), ChatOptions(Sampling(max_new_tokens=4), json=True),
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
    turns = run_chat(str(plain), ChatOptions(Sampling(max_new_tokens=5)), stdin=io.StringIO("امروز هوا\nامروز هوا\n"),
                     stdout=out)
    expected, n_ctx = _greedy(plain, "امروز هوا", 5)
    assert [t["reply"] for t in turns] == [expected, expected]  # no history in plain mode
    assert turns[0]["context_tokens"] == n_ctx and not turns[0]["chat_template"]
    assert out.getvalue() == f"{expected}\n\n{expected}\n"  # piped: a blank line between replies


def test_bad_input_is_one_line(tmp_path, models, capsys):
    assert main(["chat", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langgraft: error: cannot load model") and "\n" not in err
    assert main(["chat", "--model", str(models[0]), "--prompt", "x", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens" in capsys.readouterr().err


def test_streamed_replies_print_the_same_text_as_the_non_streamed_ones(models, data_dir):
    from langgraft.generate.chat import reply
    from langgraft.model.load import load_model_or_adapter as load

    chat, plain = models
    lines = persian_lines(data_dir, 2)
    lines.append("Hello, how are you?")
    streamed = io.StringIO()  # the output shows exactly the replies, a blank line between them
    turns = run_chat(str(chat), ChatOptions(Sampling(max_new_tokens=12)), stdin=io.StringIO("\n".join(lines)),
                     stdout=streamed)
    assert streamed.getvalue() == "\n\n".join(t["reply"] for t in turns) + "\n" and len(turns) == 3
    loaded = {path: load(str(path)) for path in (chat, plain)}
    free = reply(*loaded[plain], [], lines[2], ChatOptions(Sampling(max_new_tokens=12)))["reply"]
    stop = free[4:6]
    counts = []
    for path, sampling in ((chat, Sampling(max_new_tokens=12)), (plain, Sampling(max_new_tokens=12, stop=[stop])),
                           (chat, Sampling(max_new_tokens=12, temperature=0.8, top_k=40, seed=5))):
        for line in lines:
            pieces: list[str] = []
            shown = reply(*loaded[path], [], line, ChatOptions(sampling), pieces.append)
            whole = reply(*loaded[path], [], line, ChatOptions(sampling))
            assert "".join(pieces) == shown["reply"] == whole["reply"]
            assert shown["new_tokens"] == whole["new_tokens"] > 0
            counts.append(len(pieces))
    assert max(counts) > 3  # really written piece by piece
    cut = reply(*loaded[plain], [], lines[2], ChatOptions(Sampling(max_new_tokens=12, stop=[stop])))["reply"]
    assert len(stop) == 2 and cut == free[:free.index(stop)].strip()


def test_system_message_empty_lines_and_end_of_input(models):
    chat, _ = models
    script = "\n   \nسلام\n/system به فارسی پاسخ بده.\n\nسلام\n/system\nسلام\n/help\n"  # no /exit: ends at EOF
    out = io.StringIO()
    turns = run_chat(str(chat), ChatOptions(Sampling(max_new_tokens=3), json=True), stdin=io.StringIO(script),
                     stdout=out)
    assert [t["prompt"] for t in turns] == ["سلام"] * 3
    tok = AutoTokenizer.from_pretrained(chat)
    history = [{"role": "user", "content": "سلام"}, {"role": "assistant", "content": turns[0]["reply"]}]
    system = [{"role": "system", "content": "به فارسی پاسخ بده."}]
    with_system = tok.apply_chat_template([*system, *history, {"role": "user", "content": "سلام"}], tokenize=False,
                                          add_generation_prompt=True)
    assert turns[1]["context_tokens"] == len(tok(with_system.removeprefix(tok.bos_token))["input_ids"])
    history += [{"role": "user", "content": "سلام"}, {"role": "assistant", "content": turns[1]["reply"]}]
    without = tok.apply_chat_template([*history, {"role": "user", "content": "سلام"}], tokenize=False,
                                      add_generation_prompt=True)  # "/system" alone removed the system message
    assert turns[2]["context_tokens"] == len(tok(without.removeprefix(tok.bos_token))["input_ids"])
    assert "commands:" in out.getvalue()
    assert run_chat(str(chat), ChatOptions(Sampling(max_new_tokens=3)), stdin=io.StringIO(""),
                    stdout=io.StringIO()) == []


def test_sampling_options_are_checked(models, capsys):
    chat, _ = models
    for flags, name in ((["--temperature", "-1"], "--temperature"), (["--top-p", "0"], "--top-p"),
                        (["--top-k", "-3"], "--top-k"), (["--repetition-penalty", "0"], "--repetition-penalty"),
                        (["--top-q", "0.9"], "--top-q"), (["--stop", ""], "--stop")):
        assert main(["chat", "--model", str(chat), "--prompt", "x", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("langgraft: error:") and name in err and "\n" not in err, err


def test_ctrl_c_stops_the_generation_it_interrupts(models):
    import threading

    from langgraft.model.generation import generate_ids, stream
    from langgraft.model.load import load_model_or_adapter as load

    model, tok = load(str(models[1]))
    ids = tok("امروز هوا").input_ids
    s = Sampling(max_new_tokens=50, repetition_penalty=1.0)
    assert len(generate_ids(model, tok, [ids], s)[0]) == 50
    assert len(generate_ids(model, tok, [ids], s, interrupted=[True])[0]) == 1  # stops at the next step

    def press_ctrl_c(piece: str) -> None:
        raise KeyboardInterrupt

    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        stream(model, tok, "امروز هوا", Sampling(max_new_tokens=400), press_ctrl_c)
    assert threading.active_count() == before  # the generating thread has ended, not left running


def test_a_terminal_session_streams_and_ends_cleanly_on_ctrl_d(models):
    """The interactive path for real: `langgraft chat` on a pseudo-terminal gets a Persian line, an empty line,
    /system, then Ctrl-D; it prints the reply the library gives and exits 0."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from langgraft.generate.chat import reply
    from langgraft.model.load import load_model_or_adapter as load

    chat, _ = models
    expected = reply(*load(str(chat)), [], "سلام", ChatOptions(Sampling(max_new_tokens=4)))["reply"]
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "langgraft", "chat", "--model", str(chat), "--max-new-tokens",
                             "4"], stdin=follower, stdout=follower, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    seen = b""

    def prompts(n: int, timeout: float = 120) -> None:
        """Read the terminal until it has shown the `> ` prompt n times (never blocks past the timeout)."""
        nonlocal seen
        deadline = time.time() + timeout
        while seen.count(b"> ") < n and time.time() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    return

    try:
        prompts(1)
        for n, keys in enumerate(("سلام\n", "\n", "/system be brief\n"), 2):
            os.write(leader, keys.encode())
            prompts(n)
        os.write(leader, b"\x04")  # Ctrl-D at the prompt
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    text = seen.decode("utf-8", errors="replace")
    assert text.startswith("chatting with") and seen.count(b"> ") == 4
    assert expected and f"{expected}\r\n" in text


def test_an_export_folder_is_taken_as_its_model(models, tmp_path, capsys):
    """`langgraft export --out DIR` prints DIR; DIR/model holds the model: chat (and every verb) takes DIR."""
    import shutil

    export = tmp_path / "export"
    shutil.copytree(models[0], export / "model")
    answers = []
    for path in (export, export / "model"):
        assert main(["chat", "--model", str(path), "--prompt", "سلام", "--max-new-tokens", "4", "--json"]) == 0
        answers.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reply"])
    assert answers[0] == answers[1]


@pytest.mark.parametrize("drop", ["tokenizer", "config"])
def test_a_model_folder_missing_a_part_is_one_complete_line(models, tmp_path, capsys, drop):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(models[0], broken)
    for p in broken.iterdir():
        if p.name.startswith("tokenizer") if drop == "tokenizer" else p.name == "config.json":
            p.unlink()
    assert main(["chat", "--model", str(broken), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"langgraft: error: cannot load model {broken}") and "\n" not in err
    assert not err.rstrip().endswith(":")  # not cut off after the loader's first line


@pytest.mark.parametrize("verb,args,says", [
    ("run", ["recipe.yaml"], "rerun the same command to resume"),
    ("generate", ["--model", "m", "--input", "p.jsonl", "--out", "o"], "rerun the same command to resume"),
    ("train", ["--stage", "align", "--out", "o"], "rerun it with --resume"),
    ("eval", ["--model", "m=m", "--tasks", "bpc_fa", "--out", "o"], None)])
def test_ctrl_c_says_whether_a_rerun_resumes(monkeypatch, capsys, verb, args, says):
    from langgraft import cli

    def interrupted(_args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        if action.get_default("func") is not None and action.prog.split()[-1] == verb:
            action.set_defaults(func=interrupted)
    assert cli.main([verb, *args]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("langgraft: interrupted")
    assert (says in err[0]) if says else err[0] == "langgraft: interrupted"
