"""Fault suite, second part (docs/RELIABILITY.md, "Files, processes and numbers"): concurrent and killed
writers, the data cache under the checkpoint checksums, resource bombs in GGUF files and chat templates, numbers
outside their range, and damaged input files. Each class is decided in one place and tried with several variants;
a failure is one `langgraft: error:` line, exit 2, and nothing of the user's touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import descendants, hold_lock, kill_parent_and_survivors

from langgraft.cli import main
from langgraft.config import from_dict, load_config
from langgraft.errors import UserError

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _one_line_error(capsys, *needles: str) -> str:
    """The CLI's stderr is exactly one `langgraft: error:` line holding every needle (progress bars aside)."""
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if line.strip() and not re.search(r"\|.*(it/s|s/it|\?it)", line)
           and not re.match(r"\d{4}-\d\d-\d\d [\d:.]+ \| (INFO|DEBUG|SUCCESS) ", line)]  # datatrove's log, in-process
    assert len(err) == 1 and err[0].startswith("langgraft: error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def _cli_process(argv: list[str], prefix: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """(exit status, stderr lines without progress bars) of `langgraft ARGV` as its own process."""
    done = subprocess.run([*prefix, sys.executable, "-m", "langgraft", *argv], env=ENV, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, [x for x in done.stderr.replace("\r", "\n").splitlines()
                             if x.strip() and not re.search(r"\|.*(it/s|s/it|\?it|B/s)", x)]


def _cli_status(argv: list[str]) -> int:
    """main()'s exit status, whether it returned it or argparse raised it."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


# ---------------------------------------------------------------- 8. numbers have ranges in the schema
def _train_cfg(*overrides: str):
    from langgraft.train.config import TrainConfig

    return load_config(TrainConfig, None, list(overrides))


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("optim.lr=0", "optim.lr"), ("optim.lr=.nan", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"), ("optim.embed_lr=-1e-3", "optim.embed_lr"), ("max_steps=-5", "max_steps"),
    ("epochs=0", "epochs"), ("lora.r=0", "lora.r"), ("lora.alpha=-8", "lora.alpha"),
    ("lora.dropout=1.5", "lora.dropout"), ("data.block_size=1", "data.block_size"),
    ("micro_batch_size=0", "micro_batch_size"), ("grad_accum=-1", "grad_accum"),
    ("optim.warmup_ratio=2", "optim.warmup_ratio"), ("data.replay_fraction=1", "data.replay_fraction"),
    ("log_every=0", "log_every"), ("checkpoint_every=-1", "checkpoint_every"), ("seed=-3", "seed"),
    ("optim.max_grad_norm=-1", "optim.max_grad_norm"), ("data.max_texts=-1", "data.max_texts"),
])
def test_train_numbers_out_of_range_are_one_line_naming_the_key(override, key):
    with pytest.raises(UserError, match=rf"{key} must be "):
        _train_cfg(override)


def test_train_numbers_in_range_still_load():
    cfg = _train_cfg("optim.lr=1e-5", "max_steps=0", "epochs=3", "lora.r=1", "optim.embed_lr=null",
                     "data.replay_fraction=0.5", "optim.warmup_ratio=1", "keep_checkpoints=0")
    assert (cfg.optim.lr, cfg.epochs, cfg.lora.r, cfg.optim.embed_lr) == (1e-5, 3, 1, None)


@pytest.mark.parametrize("where, value", [
    ("workers", 0), ("chunk_mb", -1), ("preview_records", -1), ("datasets.0.validation_fraction", 1.5),
    ("datasets.0.interleave_group", 0), ("datasets.0.filters.min_script_ratio", 1.5),
    ("datasets.0.filters.max_chars", 0), ("datasets.0.dedup.threshold", 0), ("datasets.0.dedup.num_perm", 0),
    ("datasets.0.sources.0.limit", -1), ("leak_guard.min_chars", -5),
])
def test_prepare_numbers_out_of_range(where, value):
    from langgraft.data.config import PrepareConfig

    raw: dict = {"datasets": [{"name": "fa", "sources": [{"path": "x.txt"}]}]}
    node, *path = raw, *where.split(".")
    for part in path[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[path[-1]] = value
    key = ".".join(p for p in where.split(".") if not p.isdigit()).split(".")[-1]
    with pytest.raises(UserError, match=rf"{key} must be "):
        from_dict(PrepareConfig, raw, source="data.yaml")


@pytest.mark.parametrize("override", ["eval.limit=-1", "eval.limit=0", "eval.batch_size=0", "tokenizer.threads=-4",
                                      "tokenizer.vocab_size=0", "eval.shots=-1", "model_extend.seed=-1",
                                      "eval.max_new_tokens=0"])
def test_recipe_numbers_out_of_range(override):
    from langgraft.pipeline.table import Recipe

    with pytest.raises(UserError, match=rf"{override.split('=')[0]} must be "):
        load_config(Recipe, None, [override])


@pytest.mark.parametrize("change", [{"shots": -1}, {"max_new_tokens": 0}, {"max_chars": -2}, {"seed": -1}])
def test_task_numbers_out_of_range(change):
    from langgraft.eval.tasks import TaskSpec

    raw = {"name": "t", "lang": "fa", "kind": "generate", "data": {"path": "x.jsonl"}, "metrics": ["exact"],
           **change}
    with pytest.raises(UserError, match=rf"{next(iter(change))} must be "):
        from_dict(TaskSpec, raw, source="task t.yaml")


@pytest.mark.parametrize("argv, flag", [
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--limit", "-1"], "--limit"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--limit", "0"], "--limit"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--shots", "-2"], "--shots"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["eval", "--model", "m=x", "--tasks", "t", "--out", "o", "--repetition-penalty", "-1"], "--repetition-penalty"),
    (["tokenizer", "train", "--input", "a.txt", "--lang", "fa", "--vocab-size", "100", "--out", "o",
      "--threads", "-4"], "--threads"),
    (["tokenizer", "train", "--input", "a.txt", "--lang", "fa", "--vocab-size", "-100", "--out", "o"],
     "--vocab-size"),
    (["tokenizer", "train", "--input", "a.txt", "--lang", "fa", "--vocab-size", "100", "--out", "o",
      "--max-sentences", "0"], "--max-sentences"),
    (["generate", "--model", "m", "--input", "i.jsonl", "--out", "o.jsonl", "--batch-size", "-1"], "--batch-size"),
    (["extend", "--model", "m", "--tokenizer", "t", "--out", "o", "--seed", "-1"], "--seed"),
    (["tokenizer", "report", "--tokenizer", "a=b", "--text", "fa=t.txt", "--out", "o", "--sweep", "100,-5"],
     "--sweep"),
])
def test_cli_flags_out_of_range_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, argv, flag):
    monkeypatch.chdir(tmp_path)
    assert _cli_status(argv) == 2
    _one_line_error(capsys, flag)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("override", ["optim.lr=-1", "max_steps=-5", "epochs=0", "lora.r=0"])
def test_train_cli_refuses_bad_numbers_before_any_folder(tmp_path, capsys, override):
    out = tmp_path / "run"
    assert main(["train", "--stage", "align", override, "--out", str(out)]) == 2
    _one_line_error(capsys, override.split("=")[0])
    assert not out.exists()


# ---------------------------------------------------------------- 5. concurrency and leftovers
@pytest.fixture(scope="module")
def tiny_model(data_dir, tmp_path_factory):
    from helpers import load_base_tokenizer, save_tiny_model

    tmp = tmp_path_factory.mktemp("files-model")
    return save_tiny_model("llama", load_base_tokenizer(data_dir, "mistral", tmp / "tok"), tmp / "model")


def _prompts_file(path: Path, data_dir: Path, n: int) -> Path:
    from helpers import persian_lines

    path.write_text("".join(json.dumps({"prompt": t[:40]}, ensure_ascii=False) + "\n"
                            for t in persian_lines(data_dir, n)), encoding="utf-8")
    return path


def _generate(model, inp, out, *extra) -> list[str]:
    return ["generate", "--model", str(model), "--input", str(inp), "--out", str(out), "--max-new-tokens", "4",
            *extra]


def test_a_second_generate_into_a_locked_file_is_one_line(tiny_model, data_dir, tmp_path, capsys):
    inp = _prompts_file(tmp_path / "in.jsonl", data_dir, 6)
    for out in (tmp_path / "out.jsonl", tmp_path / "new" / "sub" / "out.jsonl"):
        holder = hold_lock(out)
        try:
            assert main(_generate(tiny_model, inp, out)) == 2
            _one_line_error(capsys, f"pid {holder.pid}", str(out.name))
            assert not out.exists() and not out.with_name(out.name + ".settings.json").exists()
        finally:
            holder.kill()
            holder.wait()
        assert main(_generate(tiny_model, inp, out)) == 0
        assert len(out.read_text(encoding="utf-8").splitlines()) == 6
        capsys.readouterr()


def test_two_generate_processes_never_write_a_line_twice(tiny_model, data_dir, tmp_path):
    inp, out = _prompts_file(tmp_path / "in.jsonl", data_dir, 48), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "langgraft", *_generate(tiny_model, inp, out, "--batch-size", "1")]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    lines = [json.loads(x)["line"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert lines == list(range(1, 49))
    for status, err in results:
        assert status == 0 or (status == 2 and "is writing it" in err and len(err.strip().splitlines()) == 1)


def test_a_generate_that_failed_at_start_does_not_block_the_corrected_command(tiny_model, data_dir, tmp_path,
                                                                             capsys):
    inp, out = _prompts_file(tmp_path / "in.jsonl", data_dir, 4), tmp_path / "out.jsonl"
    settings = out.with_name(out.name + ".settings.json")
    assert main(_generate(tiny_model, inp, out)[:-2] + ["--max-new-tokens", "100000"]) == 2  # > the context
    _one_line_error(capsys, "--max-new-tokens")
    assert not out.exists() and not settings.exists()
    assert main(_generate(tiny_model, inp, out)) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    # a run killed before its first line (an empty file and its settings, as a kill leaves them)
    for torn in (b"", b'{"line": 1, "outp'):
        other = tmp_path / f"killed{len(torn)}.jsonl"
        other.write_bytes(torn)
        other.with_name(other.name + ".settings.json").write_text(json.dumps({"--temperature": 0.7}))
        assert main(_generate(tiny_model, inp, other)) == 0
        assert [json.loads(x)["line"] for x in other.read_text(encoding="utf-8").splitlines()] == [1, 2, 3, 4]


_DIES = ("import os, sys\nfrom pathlib import Path\nfrom langgraft.rundir import atomic_dir, atomic_write_text\n"
         "out = Path(sys.argv[1])\nwith atomic_dir(out) as tmp:\n    (tmp / 'half.bin').write_bytes(b'x' * 100)\n"
         "    fd = os.open(str(out.parent / ('.' + out.name + '.json.tmp-%d-abc' % os.getpid())), os.O_CREAT)\n"
         "    os._exit(9)\n")


def test_leftovers_of_a_killed_writer_are_cleaned_by_the_next_run_and_live_ones_kept(tmp_path):
    from langgraft.rundir import atomic_write_text, run_stage

    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-c", _DIES, str(out)], env=ENV).returncode == 9
    dead = sorted(p.name for p in tmp_path.iterdir())
    assert len(dead) == 2 and all(".tmp-" in name for name in dead), dead
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".out.tmp-{live.pid}-x").mkdir()  # a writer that still runs
        (tmp_path / ".out.tmp-nopid").mkdir()  # not ours to judge
        run_stage(out, stage="s", config={}, inputs=[], work=lambda tmp: None)
        atomic_write_text(tmp_path / "out.json", "{}")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == [f".out.tmp-{live.pid}-x", ".out.tmp-nopid", "out", "out.json"], left
    finally:
        live.kill()
        live.wait()


def test_an_output_set_aside_just_before_a_kill_is_put_back(tmp_path):
    from langgraft.rundir import run_stage

    out = tmp_path / "out"
    run_stage(out, stage="s", config={"v": 1}, inputs=[], work=lambda tmp: (tmp / "a.txt").write_text("v1") and None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    os.replace(out, tmp_path / f".out.old-{gone.pid}")  # the first of atomic_dir's two renames, then a kill
    result = run_stage(out, stage="s", config={"v": 1}, inputs=[], work=lambda tmp: None)
    assert result.skipped and (out / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("workers", [1, 3])
def test_a_killed_data_prepare_leaves_no_child_with_any_worker_count(tmp_path, data_dir, workers):
    quran = sorted((data_dir / "parsinlu/data/translation/quran").glob("fa.*.norm.txt"))[:4]
    cfg = {"root": str(tmp_path), "workers": workers, "chunk_mb": 1, "datasets": [{
        "name": "fa", "validation_fraction": 0.0, "sources": [{"path": str(p)} for p in quran]}]}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "langgraft", "data", "prepare", "--config",
                             str(tmp_path / "data.yaml"), "--out", str(tmp_path / "out")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: set[int] = set()
    deadline = time.time() + 90
    while time.time() < deadline and len(children) < (1 if workers == 1 else workers + 1) and proc.poll() is None:
        children |= descendants(proc.pid)  # the manager (any worker count) and the pool workers
        time.sleep(0.05)
    assert children, "no child process started"
    left = kill_parent_and_survivors(proc, children, 20)
    assert not left, f"children outlived their parent: {left}"


# ---------------------------------------------------------------- 6. the data cache is covered like a checkpoint
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """A finished 6-step pretrain run (checkpoints at steps 2, 4, 6), its config and its adapter weights."""
    from helpers import make_dataset, make_extended_model, persian_lines
    from safetensors.torch import load_file

    from langgraft.train.config import TrainConfig
    from langgraft.train.stages import train

    tmp = tmp_path_factory.mktemp("files-train")
    fa = persian_lines(data_dir, 140)
    raw = {"model": str(make_extended_model(tmp, data_dir, n_new=20)),
           "data": {"dataset": str(make_dataset(tmp / "data", "fa", fa[:120], fa[120:])), "block_size": 16},
           "micro_batch_size": 2, "max_steps": 6, "checkpoint_every": 2, "keep_checkpoints": 3, "eval_every": 0,
           "log_every": 1, "precision": "fp32", "lora": {"targets": ["q_proj", "v_proj"], "dropout": 0.1}}
    cfg = from_dict(TrainConfig, raw)
    train("pretrain", cfg, out=tmp / "finished")
    # a finished run drops its packed-data cache (only a resume needs it): pack it again as the run did
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from langgraft.train.data import build_data

    build_data("pretrain", cfg, AutoTokenizer.from_pretrained(cfg.model), Accelerator(cpu=True), tmp / "finished")
    return tmp / "finished", cfg, load_file(tmp / "finished" / "adapter" / "adapter_model.safetensors")


def _tamper(kind: str, cache: Path) -> None:
    import numpy as np

    train = cache / "train.npy"
    if kind == "bytes":  # a few bytes of token ids changed in place: the file still loads, its key still matches
        mapped = np.load(train, mmap_mode="r+")
        mapped[:, ::4] = 7  # one id in every 4
        mapped.flush()
        return
    if kind == "validation":
        np.save(cache / "validation.npy", np.load(cache / "validation.npy")[::-1])
        return
    ids = np.load(train)
    np.save(train, np.roll(ids, 1, axis=0) if kind == "rows_swapped" else ids[:-3])


@pytest.mark.parametrize("kind", ["bytes", "rows_swapped", "fewer_rows", "validation"])
def test_a_changed_data_cache_is_named_and_rebuilt_and_the_resume_is_exact(finished_run, tmp_path, capsys, kind):
    import shutil

    import torch
    from safetensors.torch import load_file

    from langgraft.train.stages import train

    source, cfg, reference = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    (run / "manifest.json").unlink()
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "checkpoints" / "step-00000006")
    _tamper(kind, run / "packed-data")
    capsys.readouterr()
    train("pretrain", cfg, out=run, resume=True)
    got = load_file(run / "adapter" / "adapter_model.safetensors")
    assert got.keys() == reference.keys()
    for key in got:  # the weights of the uninterrupted run, not of the changed blocks
        torch.testing.assert_close(got[key], reference[key], rtol=0, atol=0, msg=key)
    assert "packed-data does not match the checkpoint's data checksum" in capsys.readouterr().err


# ---------------------------------------------------------------- 7. resource bombs in files
def _gguf(kvs: bytes, n_kv: int, n_tensors: int = 0, tail: bytes = b"") -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tail


def _gguf_string(text: bytes, length: int | None = None) -> bytes:
    import struct

    return struct.pack("<Q", len(text) if length is None else length) + text


def _kv_array(key: bytes, item_type: int, count: int, payload: bytes = b"") -> bytes:
    import struct

    return _gguf_string(key) + struct.pack("<IIQ", 9, item_type, count) + payload


def _bombs() -> dict[str, bytes]:
    import struct

    arch = _gguf_string(b"general.architecture") + struct.pack("<I", 8) + _gguf_string(b"llama")
    return {
        "array_2e62_uint8": _gguf(_kv_array(b"a", 0, 1 << 62) + b"\0" * 60, 1),
        "array_2e40_strings": _gguf(_kv_array(b"tokenizer.ggml.tokens", 8, 1 << 40) + b"\0" * 60, 1),
        "string_2e62_bytes": _gguf(_gguf_string(b"k") + struct.pack("<I", 8) + _gguf_string(b"", 1 << 62), 1),
        "key_2e63_bytes": _gguf(_gguf_string(b"", 1 << 63), 1),
        "kv_count_2e60": _gguf(arch, 1 << 60),
        "tensor_count_2e50": _gguf(arch, 1, n_tensors=1 << 50, tail=b"\0" * 64),
        "nested_arrays": _gguf(_kv_array(b"n", 9, 1 << 30, struct.pack("<IQ", 0, 1 << 60) * 4), 1),
        "tensor_dims_huge": _gguf(arch, 1, n_tensors=1, tail=_gguf_string(b"w") + struct.pack("<I", 4)
                                  + struct.pack("<4Q", *[1 << 40] * 4) + struct.pack("<IQ", 0, 0)),
        "tensor_1000_dims": _gguf(arch, 1, n_tensors=1, tail=_gguf_string(b"w") + struct.pack("<I", 1000)
                                  + b"\1" * 8000),
        # a file whose bytes do hold its elements, but millions of them (each a Python object in the reader)
        "five_million_elements": _gguf(arch + _kv_array(b"many", 0, 5_000_000, b"\0" * 5_000_000), 2),
    }


_BOUNDED = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from langgraft.cli import main\nsys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("name", sorted(_bombs()))
def test_a_gguf_claiming_more_than_it_holds_is_one_line_in_bounded_memory(tmp_path, name):
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(_bombs()[name])
    try:
        done = subprocess.run([sys.executable, "-c", _BOUNDED, "import-gguf", str(path), "--out",
                               str(tmp_path / "hf")], env=ENV, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("still reading after 60 s")
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr[-2000:]
    assert err[0].startswith("langgraft: error: ") and str(path) in err[0] and "GGUF" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


NESTED = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}"
TEMPLATES = {
    "nested_loops": NESTED,
    "nested_loops_in_a_macro": "{% macro m() %}" + NESTED + "{% endmacro %}{{ m() }}",
    "huge_output": "{% for a in range(100000) %}{{ 'x' * 5000 }}{% endfor %}",
    "huge_template": "{# " + "x" * 300_000 + " #}{{ messages[0]['content'] }}",
}


@pytest.fixture(scope="module")
def bomb_models(tiny_model, tmp_path_factory):
    import shutil

    from transformers import AutoTokenizer

    made = {}
    for name, template in TEMPLATES.items():
        folder = tmp_path_factory.mktemp(f"bomb-{name}") / "model"
        shutil.copytree(tiny_model, folder)
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = template
        tok.save_pretrained(folder)
        made[name] = folder
    return made


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_a_chat_template_bomb_is_one_line_in_chat(bomb_models, name):
    started = time.time()
    try:
        done = subprocess.run([sys.executable, "-m", "langgraft", "chat", "--model", str(bomb_models[name]),
                               "--prompt", "سلام", "--max-new-tokens", "2"], env=ENV, capture_output=True,
                              text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("chat still rendering after 90 s")
    err = [x for x in done.stderr.replace("\r", "\n").splitlines() if x.strip() and "it/s" not in x]
    assert done.returncode == 2 and len(err) == 1 and "chat template" in err[0], done.stderr[-2000:]
    assert time.time() - started < 60


_ENCODE = ("import sys\nfrom transformers import AutoTokenizer\nfrom langgraft.errors import UserError\n"
           "from langgraft.train.instruct import encode_conversation, encode_example\n"
           "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
           "for call in (lambda: encode_example(tok, {'instruction': 'a', 'input': '', 'output': 'b'}),\n"
           "             lambda: encode_conversation(tok, [{'role': 'user', 'content': 'a'},\n"
           "                                               {'role': 'assistant', 'content': 'b'}])):\n"
           "    try:\n        call()\n    except UserError as exc:\n        print(exc)\n")


def _bounded_run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} still rendering after 90 s")


def test_a_chat_template_bomb_is_one_line_in_generate_and_instruct_data(bomb_models, data_dir, tmp_path):
    inp = _prompts_file(tmp_path / "in.jsonl", data_dir, 2)
    out = tmp_path / "out.jsonl"
    done = _bounded_run([sys.executable, "-m", "langgraft", *_generate(bomb_models["nested_loops"], inp, out,
                                                                        "--chat")], "generate")
    err = [x for x in done.stderr.replace("\r", "\n").splitlines() if x.strip() and "it/s" not in x]
    assert done.returncode == 2 and len(err) == 1 and "chat template" in err[0], done.stderr[-2000:]
    assert not out.exists()
    done = _bounded_run([sys.executable, "-c", _ENCODE, str(bomb_models["nested_loops"])], "instruct data")
    assert done.stdout.count("chat template: still rendering") == 2, done.stdout + done.stderr[-2000:]


# ---------------------------------------------------------------- 9. damaged inputs are one line, not a traceback
def _damaged_safetensors(src: Path, dst: Path, how: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"header": data[:8] + b"\xff" * 32 + data[40:], "truncated": data[: len(data) // 2],
                         "empty": b""}[how])
    return dst


@pytest.mark.parametrize("how", ["header", "truncated", "empty"])
def test_damaged_safetensors_weights_are_one_line(tiny_model, tmp_path, how):
    from langgraft.model.load import load_causal_lm

    model = _damaged_safetensors(tiny_model, tmp_path / "m", how)
    with pytest.raises(UserError, match=rf"--model {model}: "):
        load_causal_lm(str(model))


def _parquet_bytes(how: str, tmp_path: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["سلام دنیا، این یک متن آزمایشی است"] * 50}), tmp_path / "real.parquet")
    real = (tmp_path / "real.parquet").read_bytes()
    return {"magic_only": b"PAR1garbagePAR1", "random": os.urandom(3000), "truncated": real[: len(real) - 40],
            "middle_zeroed": real[:4] + b"\0" * (len(real) - 200) + real[-196:]}[how]


@pytest.mark.parametrize("how", ["magic_only", "random", "truncated", "middle_zeroed"])
def test_a_damaged_parquet_source_is_one_line(tmp_path, capsys, how):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.parquet").write_bytes(_parquet_bytes(how, tmp_path))
    cfg = {"root": str(tmp_path / "d"), "workers": 1, "datasets": [{"name": "fa", "sources": [{"path": "x.parquet"}]}]}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(cfg))
    status, err = _cli_process(["data", "prepare", "--config", str(tmp_path / "data.yaml"), "--out",
                                str(tmp_path / "out")])
    assert status == 2 and len(err) == 1 and "x.parquet: not a readable Parquet file" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["magic_only", "truncated", "middle_zeroed"])
def test_a_damaged_prepared_shard_is_one_line(tmp_path, how):
    from helpers import make_dataset

    from langgraft.data.load import iter_texts

    ds = make_dataset(tmp_path / "data", "fa", ["متن اول برای آزمایش"] * 20, ["متن دوم"] * 5)
    shard = next((ds / "train").glob("*.parquet"))
    shard.write_bytes(_parquet_bytes(how, tmp_path))
    with pytest.raises(UserError, match=rf"{shard.name}: not a readable Parquet file"):
        list(iter_texts(ds, "train"))


@pytest.mark.parametrize("content", [b'{"name": "fa", "splits": {"tra', b"\xff\xfe{}", b"[1, 2]", b'{"name": "fa"}',
                                     b'{"splits": {"train": 3}}'])
def test_a_damaged_dataset_json_is_one_line(tmp_path, content):
    from helpers import make_dataset

    from langgraft.data.load import iter_texts

    ds = make_dataset(tmp_path / "data", "fa", ["متن اول برای آزمایش"] * 20, ["متن دوم"] * 5)
    (ds / "dataset.json").write_bytes(content)
    with pytest.raises(UserError, match="dataset.json"):
        list(iter_texts(ds, "train"))


TORN = [b'{"base_model_name_or_path": "mod', b"\xff\xfe\x00{", b"[1, 2, 3]", b""]


@pytest.mark.parametrize("content", TORN)
def test_a_torn_adapter_config_is_one_line(tmp_path, capsys, content):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_bytes(content)
    assert main(["chat", "--model", str(adapter), "--prompt", "hi"]) == 2
    _one_line_error(capsys, "adapter_config.json")


@pytest.mark.parametrize("content", TORN)
def test_a_torn_demo_record_is_one_line(tmp_path, content):
    from langgraft.demo import SHIPPED, _materialise

    out = tmp_path / "demo"
    out.mkdir()
    (out / SHIPPED).write_bytes(content)
    with pytest.raises(UserError, match=SHIPPED.replace(".", r"\.")):
        _materialise(out, print)


@pytest.mark.parametrize("content", TORN[:3])
def test_a_torn_generate_settings_file_is_one_line(tiny_model, data_dir, tmp_path, capsys, content):
    inp, out = _prompts_file(tmp_path / "in.jsonl", data_dir, 3), tmp_path / "out.jsonl"
    assert main(_generate(tiny_model, inp, out)) == 0
    capsys.readouterr()
    out.with_name(out.name + ".settings.json").write_bytes(content)
    before = out.read_bytes()
    assert main(_generate(tiny_model, inp, out)) == 2
    _one_line_error(capsys, "out.jsonl.settings.json")
    assert out.read_bytes() == before


NOT_UTF8_YAML = b"workers: 1\nroot: \"\xff\xfe\"\n"


@pytest.mark.parametrize("argv", [["data", "prepare", "--config", "{y}", "--out", "{o}"],
                                  ["train", "--stage", "align", "--config", "{y}", "--out", "{o}"],
                                  ["run", "{y}"]])
def test_non_utf8_yaml_is_one_line_naming_the_file(tmp_path, capsys, argv):
    path = tmp_path / "bad.yaml"
    path.write_bytes(NOT_UTF8_YAML)
    assert main([a.format(y=path, o=tmp_path / "out") for a in argv]) == 2
    _one_line_error(capsys, str(path), "UTF-8")


def test_a_non_utf8_task_file_is_one_line_naming_it(tmp_path):
    from langgraft.eval.tasks import load_task

    path = tmp_path / "task.yaml"
    path.write_bytes(b"name: t\ndescription: \"\xff\"\n")
    with pytest.raises(UserError, match=rf"{path}: not valid UTF-8"):
        load_task(str(path))


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b'{"models": {', b"[]"])
def test_a_damaged_results_json_in_compare_is_one_line(tmp_path, capsys, content):
    from langgraft.rundir import run_stage

    old = tmp_path / "old"
    run_stage(old, stage="eval", config={}, inputs=[], work=lambda tmp: (tmp / "results.json").write_bytes(content)
              and None)
    assert main(["eval", "--compare", str(old), "--out", str(tmp_path / "cmp")]) == 2
    _one_line_error(capsys, "results.json")
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("argv, where", [
    (["--prompt", "a\udcffb"], "--prompt"), (["--prompt", "\ud800"], "--prompt"),
    (["--prompt", "hi", "--system", "x\udfff"], "--system")])
def test_a_lone_surrogate_in_a_chat_prompt_is_one_line(tiny_model, capsys, argv, where):
    assert main(["chat", "--model", str(tiny_model), "--max-new-tokens", "2", *argv]) == 2
    _one_line_error(capsys, where)


@pytest.mark.parametrize("data", [b"\xff\xfehello\n", b"ok line\n\xc3(\n"])
def test_non_utf8_chat_input_is_one_line(tiny_model, monkeypatch, capsys, data):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert main(["chat", "--model", str(tiny_model), "--max-new-tokens", "2"]) == 2
    _one_line_error(capsys, "stdin: line")


def test_a_lone_surrogate_in_generate_input_is_a_counted_skip_or_a_strict_stop(tiny_model, tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"prompt": "سلام"}\n{"prompt": "a\\ud800b"}\n{"prompt": ["x"]}\n'
                   '{"prompt": [{"role": "user", "content": "\\udfff"}]}\n', encoding="utf-8")
    assert main(_generate(tiny_model, inp, out)) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r.get("skipped") for r in rows] == [None, "bad_text", "bad_field", "bad_field"]
    assert "skipped bad_field 2, bad_text 1" in capsys.readouterr().out
    assert main(_generate(tiny_model, inp, tmp_path / "strict.jsonl", "--strict")) == 2
    _one_line_error(capsys, "in.jsonl:2", "lone surrogate")
    chat_in = tmp_path / "chat.jsonl"
    chat_in.write_text('{"prompt": [{"role": "user", "content": "\\udfff"}]}\n', encoding="utf-8")
    assert main(_generate(tiny_model, chat_in, tmp_path / "chat_out.jsonl", "--chat")) == 0
    assert json.loads((tmp_path / "chat_out.jsonl").read_text(encoding="utf-8"))["skipped"] == "bad_text"


@pytest.mark.parametrize("pattern", ["../outside/*.txt", "sub/../../outside/a.txt", "../outside/**"])
def test_prepare_sources_may_not_climb_out_of_the_root(tmp_path, capsys, pattern):
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "a.txt").write_text("متن بیرون از ریشه که نباید خوانده شود\n" * 5, encoding="utf-8")
    cfg = {"root": str(tmp_path / "root"), "workers": 1, "datasets": [{"name": "fa", "sources": [{"path": pattern}]}]}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["data", "prepare", "--config", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "climbs out", pattern)
    assert not (tmp_path / "out").exists()


def _without_root_override() -> list[str]:
    """Root writes read-only files and reads unreadable ones regardless; without CAP_DAC_OVERRIDE it is held to
    the permission bits like any user (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permission bits cannot be tried")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def test_read_only_and_unreadable_files_are_one_line(tiny_model, data_dir, tmp_path):
    inp = _prompts_file(tmp_path / "in.jsonl", data_dir, 2)
    out = tmp_path / "out.jsonl"
    assert main(_generate(tiny_model, inp, out)) == 0
    out.write_text(out.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    out.chmod(0o444)  # one line done, the rest to append: the file is read-only
    secret = tmp_path / "secret.yaml"
    secret.write_text("workers: 1\n")
    secret.chmod(0)
    text = tmp_path / "text.txt"
    text.write_text("سلام\n" * 50, encoding="utf-8")
    text.chmod(0)
    cases = [(_generate(tiny_model, inp, out), "out.jsonl"),
             (["data", "prepare", "--config", str(secret), "--out", str(tmp_path / "o")], "secret.yaml"),
             (["train", "--stage", "align", "--config", str(secret), "--out", str(tmp_path / "r")], "secret.yaml"),
             (["tokenizer", "train", "--input", str(text), "--lang", "fa", "--vocab-size", "100", "--out",
               str(tmp_path / "t")], "text.txt")]
    for argv, needle in cases:
        status, err = _cli_process(argv, tuple(_without_root_override()))
        assert status == 2 and len(err) == 1 and needle in err[0] and "Permission denied" in err[0], (argv[:2], err)
