"""Fault suite: what langgraft promises when inputs, outputs, processes and files go wrong (docs/RELIABILITY.md).

Each class is decided in one place (rundir for outputs and locks, checkpoint for checkpoints, the schema checks for
names and paths) and tested here with several variants: nothing outside a stage's own output is deleted, no code
runs from a data file, names and data paths stay where they belong, one writer per output, checkpoints prove
themselves, and a failure is one line that leaves a usable folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from helpers import (alive, descendants, english_lines, hold_lock, kill_parent_and_survivors, load_base_tokenizer,
                     make_dataset, make_extended_model, persian_lines, save_tiny_model)

from langgraft.cli import main
from langgraft.config import apply_override, from_dict
from langgraft.errors import UserError
from langgraft.rundir import output_lock, output_stamp, read_manifest, run_stage
from langgraft.train.checkpoint import CHECKSUMS, list_checkpoints
from langgraft.train.config import TrainConfig
from langgraft.train.stages import train

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _stage(out: Path, stage: str = "demo", config: dict | None = None, inputs=(), **kw):
    return run_stage(out, stage=stage, config=config or {}, inputs=list(inputs),
                     work=lambda tmp: (tmp / "made.txt").write_text(stage) and None, **kw)


def _tree(path: Path) -> dict[str, bytes]:
    """Every file's bytes (the console log the CLI appends to langgraft folders is not content)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "langgraft.log"}


# ---------------------------------------------------------------- 1. never delete what langgraft did not write
def test_compare_never_replaces_a_foreign_folder_or_the_working_directory(tmp_path, monkeypatch, capsys):
    evals = tmp_path / "e"
    _stage(evals, "eval")  # a (minimal) earlier eval output to compare
    (evals / "results.json").write_text(json.dumps({"models": {}, "tasks": {}, "errors": []}))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "recipe.yaml").write_text("mine")
    for out, why in ((str(mine), "not a langgraft output; refusing to overwrite"), (".", "is the working directory")):
        monkeypatch.chdir(work)
        assert main(["eval", "--compare", str(evals), "--out", out]) == 2
        assert why in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "years of work" and (work / "recipe.yaml").read_text() == "mine"
    assert main(["eval", "--compare", str(evals), "--out", str(tmp_path / "cmp")]) == 0  # a new folder is fine
    assert read_manifest(tmp_path / "cmp")["stage"] == "eval"


@pytest.mark.parametrize("first,second", [("data prepare", "tokenizer-train"), ("export", "eval"),
                                          ("tokenizer-extend", "extend")])
def test_a_verb_replaces_only_its_own_stage_even_with_force(tmp_path, first, second):
    out = tmp_path / "out"
    _stage(out, first)
    for force in (False, True):
        with pytest.raises(UserError, match=f"holds a `{first}` output, not a `{second}` one"):
            _stage(out, second, force=force)
        assert (out / "made.txt").read_text() == first
    _stage(out, first, config={"v": 2}, force=True)  # its own stage's output: rerun
    assert read_manifest(out)["config"] == {"v": 2}


def test_tokenizer_train_over_a_prepared_dataset_is_refused_on_the_cli(tmp_path, data_dir, capsys):
    text = tmp_path / "fa.txt"
    text.write_text("\n".join(persian_lines(data_dir, 300)), encoding="utf-8")
    data = tmp_path / "data"
    _stage(data, "data prepare")
    before = _tree(data)
    args = ["tokenizer", "train", "--input", str(text), "--lang", "fa", "--vocab-size", "500", "--out", str(data)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a `data prepare` output" in err and len(err.splitlines()) == 1
    assert _tree(data) == before
    assert main(args + ["--force"]) == 2 and _tree(data) == before


def test_train_never_replaces_another_verbs_output(tmp_path, train_setup):
    out = tmp_path / "export"
    _stage(out, "export")
    with pytest.raises(UserError, match="not a langgraft training run"):
        train("align", _cfg(train_setup), out=out)
    assert (out / "made.txt").read_text() == "export"


@pytest.mark.parametrize("where", ["inside", "contains"])
def test_an_output_never_holds_or_sits_inside_an_input(tmp_path, where):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_text("w")
    if where == "inside":  # e.g. `extend --out MODEL/ext`: it would hash itself as an input, never up to date
        with pytest.raises(UserError, match="is inside the input folder"):
            _stage(model / "ext", inputs=[model])
        assert not (model / "ext").exists()
    else:  # an input inside the output folder would be deleted when the output is replaced
        out = tmp_path / "tok"
        _stage(out, "tokenizer-train")
        (out / "fa.txt").write_text("my text")
        with pytest.raises(UserError, match="holds the input"):
            _stage(out, "tokenizer-train", config={"v": 2}, inputs=[out / "fa.txt"])
        assert (out / "fa.txt").read_text() == "my text"


def test_demo_keeps_edited_files_and_refuses_a_foreign_folder(tmp_path):
    from langgraft.demo import _materialise

    out = tmp_path / "demo"
    said: list[str] = []
    _materialise(out, said.append)
    (out / "recipe.yaml").write_text("# my experiment\n")
    (out / "corpus" / "fa.txt").write_text("متن من\n", encoding="utf-8")
    (out / "corpus" / "en.txt").unlink()
    _materialise(out, said.append)
    assert (out / "recipe.yaml").read_text() == "# my experiment\n"
    assert (out / "corpus" / "fa.txt").read_text(encoding="utf-8") == "متن من\n"
    assert (out / "corpus" / "en.txt").is_file()  # a deleted shipped file comes back
    assert sum("keeping your edited" in line for line in said) == 2
    with pytest.raises(UserError, match="cannot write there"):
        _materialise(tmp_path / "demo" / "recipe.yaml" / "sub", said.append)
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine")
    with pytest.raises(UserError, match="not a langgraft demo folder"):
        _materialise(foreign, said.append)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.md"]


# ---------------------------------------------------------------- 15.5 outputs get the user's umask
@pytest.mark.parametrize("umask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                      (0o002, 0o775, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        _stage(tmp_path / "out")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == dir_mode
    assert (out / "manifest.json").stat().st_mode & 0o777 == file_mode
    assert (out / "made.txt").stat().st_mode & 0o777 == file_mode


# ---------------------------------------------------------------- 3. names are identifiers, paths stay inside
TASK = {"name": "t", "lang": "fa", "kind": "intrinsic", "metrics": ["bpc"], "text": "text",
        "data": {"path": "heldout.jsonl"}}


@pytest.mark.parametrize("change,match", [
    ({"data": {"path": "../../../../etc/passwd"}}, "data path.*relative path inside the data root"),
    ({"data": {"path": "sub/../../x.jsonl"}}, "data path"),
    ({"shots_data": {"path": "../shots.jsonl"}}, "shots_data path"),
    ({"data": {"format": "parallel", "files": {"text": "../a.txt"}}}, "data path"),
    ({"name": "../../x"}, "name: '../../x' is not a valid name"),
    ({"name": ".."}, "name: '..' is not a valid name"),
    ({"name": "a/b"}, "not a valid name"),
    ({"suites": ["../charts"]}, "suites: '../charts' is not a valid name"),
])
def test_task_names_and_data_paths_are_checked_with_the_schema(tmp_path, change, match):
    from langgraft.eval.tasks import load_task

    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({**TASK, **change}))
    with pytest.raises(UserError, match=match):
        load_task(path)


def test_a_users_own_task_may_name_an_absolute_file_and_a_relative_one_reads_inside_the_root(tmp_path):
    from langgraft.eval.records import read_records
    from langgraft.eval.tasks import load_task

    (tmp_path / "heldout.jsonl").write_text('{"text": "hello"}\n')
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump({**TASK, "data": {"path": str(tmp_path / "heldout.jsonl")}}))
    assert read_records(load_task(path).data, Path("/nonexistent"), "t")[0] == [{"text": "hello"}]


@pytest.mark.parametrize("name", ["..", ".", "../up", "a/b", "", ".hidden"])
def test_dataset_names_never_leave_the_output(tmp_path, name):
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    (tmp_path / "in.txt").write_text("some text here\n")
    cfg = from_dict(PrepareConfig, {"root": str(tmp_path), "datasets": [
        {"name": name, "sources": [{"path": "in.txt"}]}]})
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match=r"datasets\[0\]\.name"):
        prepare(cfg, tmp_path / "runs" / "data")
    assert list((tmp_path / "runs").iterdir()) == [] and not (tmp_path / "dataset.json").exists()


def test_dataset_shards_and_model_names_cannot_point_elsewhere(tmp_path):
    from langgraft.data.load import split_files
    from langgraft.eval.run import parse_models

    ds = make_dataset(tmp_path, "fa", ["a text"], [])
    info = json.loads((ds / "dataset.json").read_text())
    info["splits"]["train"]["files"] = ["../../secret.parquet"]
    (ds / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="relative path inside the dataset folder"):
        split_files(ds, "train")
    for bad in ("../x=m", "a/b=m", ".=m"):
        with pytest.raises(UserError, match="not a valid name"):
            parse_models([bad])


# ---------------------------------------------------------------- 4. one writer per output
def test_a_second_writer_gets_one_line_naming_the_holder_and_a_killed_holder_frees_it(tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        with pytest.raises(UserError, match=f"another langgraft process \\(pid {holder.pid}\\) is writing it"):
            _stage(out)
        evals = tmp_path / "e"
        _stage(evals, "eval")
        (evals / "results.json").write_text(json.dumps({"models": {}, "tasks": {}, "errors": []}))
        assert main(["eval", "--compare", str(evals), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0]
        assert not out.exists()
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the flock
        holder.wait()
    assert not _stage(out).skipped
    with output_lock(out), output_lock(out):  # re-entrant within one process
        assert _stage(out).skipped


def test_two_trainings_of_one_folder_do_not_race(tmp_path, train_setup):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            train("align", _cfg(train_setup), out=out)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_data_prepare_leaves_no_worker_running(tmp_path, data_dir):
    quran = sorted((data_dir / "parsinlu/data/translation/quran").glob("fa.*.norm.txt"))[:4]
    cfg = {"root": str(tmp_path), "workers": 2, "chunk_mb": 1, "datasets": [{
        "name": "fa", "validation_fraction": 0.0, "sources": [{"path": str(p)} for p in quran]}]}
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "langgraft", "data", "prepare", "--config", str(path),
                             "--out", str(tmp_path / "out")], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    workers: set[int] = set()
    deadline = time.time() + 90
    while time.time() < deadline and len(workers) < 3 and proc.poll() is None:
        workers |= descendants(proc.pid)  # the manager, the fork server and the pool workers
        time.sleep(0.05)
    assert len(workers) >= 3, "the pool never started"
    left = kill_parent_and_survivors(proc, workers, 30)
    assert not left, f"workers outlived their parent: {left}"


# ---------------------------------------------------------------- training fixtures
@pytest.fixture(scope="module")
def train_setup(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("reliability")
    model = make_extended_model(tmp, data_dir, n_new=20)
    fa = persian_lines(data_dir, 140)
    return {"model": model, "dataset": make_dataset(tmp / "data", "fa", fa[:120], fa[120:]), "tmp": tmp}


def _cfg(setup, **over) -> TrainConfig:
    raw = {"model": str(setup["model"]), "data": {"dataset": str(setup["dataset"]), "block_size": 16},
           "micro_batch_size": 2, "max_steps": 6, "checkpoint_every": 2, "keep_checkpoints": 3, "eval_every": 0,
           "log_every": 1, "precision": "fp32", "lora": {"targets": ["q_proj", "v_proj"], "dropout": 0.1}}
    for key, value in over.items():
        apply_override(raw, f"{key}={json.dumps(value)}")
    return from_dict(TrainConfig, raw)


@pytest.fixture(scope="module")
def finished(train_setup):
    """A finished 6-step run (checkpoints at steps 2, 4, 6) and its adapter weights."""
    out = train_setup["tmp"] / "finished"
    train("pretrain", _cfg(train_setup), out=out)
    return out, load_file(out / "adapter" / "adapter_model.safetensors")


def _killed_copy(finished, tmp_path: Path, drop_steps=()) -> Path:
    """The finished run as a kill would have left it: no adapter or manifest, maybe fewer checkpoints."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    (run / "manifest.json").unlink()
    shutil.rmtree(run / "adapter")
    for step in drop_steps:
        shutil.rmtree(run / "checkpoints" / f"step-{step:08d}")
    return run


def _same_adapter(run: Path, reference: dict) -> None:
    got = load_file(run / "adapter" / "adapter_model.safetensors")
    assert got.keys() == reference.keys()
    for key in got:
        torch.testing.assert_close(got[key], reference[key], rtol=0, atol=0, msg=key)


class _Payload:
    """Unpickling this runs code: it writes `marker`. A loader that runs it has executed data."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _write_payload(path: Path, marker: Path) -> None:
    torch.save({"model": _Payload(marker), "step": 6}, path)
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.is_file()
    marker.unlink()


def _reseal(ckpt: Path) -> None:
    """Rewrite checksums.json as whoever changed the files would (checksums catch damage, not an attacker)."""
    from langgraft.rundir import sha256_path

    names = sorted(p.name for p in ckpt.iterdir() if p.name != CHECKSUMS)
    (ckpt / CHECKSUMS).write_text(json.dumps({n: sha256_path(ckpt / n) for n in names}))


# ---------------------------------------------------------------- 2 + 5. no code from data, verified checkpoints
def _damage(kind: str, ckpt: Path, marker: Path) -> None:
    state = ckpt / "state.pt"
    if kind == "zeros":  # 256 zero bytes in the middle of the weights
        data = bytearray(state.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 256] = bytes(256)
        state.write_bytes(bytes(data))
    elif kind == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif kind == "rng_missing":
        (ckpt / "rng-0.pt").unlink()
    elif kind == "no_checksums":
        (ckpt / CHECKSUMS).unlink()
    elif kind == "pickle_state":
        _write_payload(state, marker)
        _reseal(ckpt)
    elif kind == "pickle_rng":
        _write_payload(ckpt / "rng-0.pt", marker)
        _reseal(ckpt)


@pytest.mark.parametrize("kind", ["zeros", "truncated", "rng_missing", "no_checksums", "pickle_state",
                                  "pickle_rng"])
def test_a_damaged_checkpoint_is_named_and_the_previous_one_resumes_exactly(finished, train_setup, tmp_path,
                                                                            capsys, kind):
    run = _killed_copy(finished, tmp_path, drop_steps=[6])
    bad = run / "checkpoints" / "step-00000004"
    marker = tmp_path / "pwned"
    _damage(kind, bad, marker)
    train("pretrain", _cfg(train_setup), out=run, resume=True)
    printed = capsys.readouterr()
    assert f"checkpoint {bad}:" in printed.out + printed.err and "using the one before it" in printed.out + printed.err
    assert not marker.exists()
    _same_adapter(run, finished[1])  # resumed from step 2: the same weights as the uninterrupted run


def test_no_intact_checkpoint_is_one_line(finished, train_setup, tmp_path):
    run = _killed_copy(finished, tmp_path)
    for ckpt in list_checkpoints(run / "checkpoints"):
        _damage("truncated", ckpt, tmp_path / "m")
    with pytest.raises(UserError, match=r"no intact checkpoint \(checkpoint .*step-00000006: state.pt does not "
                                        r"match its checksum.*--force"):
        train("pretrain", _cfg(train_setup), out=run, resume=True)


@pytest.mark.parametrize("writer", ["torch_save", "npy_object_array"])
def test_a_pickle_in_the_data_cache_is_never_run(finished, train_setup, tmp_path, capsys, writer):
    import numpy as np
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from langgraft.train.data import build_data

    run = _killed_copy(finished, tmp_path, drop_steps=[6])
    cfg = _cfg(train_setup)
    build_data("pretrain", cfg, AutoTokenizer.from_pretrained(cfg.model), Accelerator(cpu=True), run)
    marker = tmp_path / "pwned"
    cache = run / "packed-data" / "train.npy"
    if writer == "torch_save":
        _write_payload(cache, marker)
    else:  # a real .npy whose object array unpickles the payload when loaded with allow_pickle=True
        np.save(cache, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    capsys.readouterr()
    train("pretrain", cfg, out=run, resume=True)
    assert "packed-data cannot be read safely" in capsys.readouterr().err and not marker.exists()
    _same_adapter(run, finished[1])


@pytest.mark.parametrize("loader", ["eval", "extend", "chat"])
@pytest.mark.parametrize("weights", ["plain_bin", "pickle_payload"])
def test_models_load_from_safetensors_only(tmp_path, data_dir, loader, weights):
    """One policy for every verb: a pickled .bin is refused, however harmless its content."""
    from langgraft.model.load import load_causal_lm, load_model

    tok = load_base_tokenizer(data_dir, "mistral", tmp_path / "tok")
    model = save_tiny_model("llama", tok, tmp_path / "m", hidden=8, layers=1)
    marker = tmp_path / "pwned"
    if weights == "plain_bin":
        torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    else:
        _write_payload(model / "pytorch_model.bin", marker)
    (model / "model.safetensors").unlink()
    with pytest.raises(UserError, match=str(model)):
        if loader == "extend":
            load_causal_lm(str(model))
        elif loader == "eval":
            load_model(str(model), "cpu")
        else:
            from langgraft.generate.chat import ChatOptions, run_chat
            from langgraft.model.generation import Loading
            from langgraft.model.generation import Sampling

            run_chat(str(model), ChatOptions(Sampling(max_new_tokens=4), load=Loading(device="cpu")), prompt="hi")
    assert not marker.exists()


def test_a_nan_stop_keeps_every_checkpoint_as_it_was(finished, train_setup, tmp_path):
    run = _killed_copy(finished, tmp_path, drop_steps=[6])
    newest = run / "checkpoints" / "step-00000004"
    state = torch.load(newest / "state.pt", weights_only=True)
    state["model"] = {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}
    torch.save(state, newest / "state.pt")
    _reseal(newest)  # a checkpoint that verifies but whose weights diverge
    before = _tree(run / "checkpoints")
    with pytest.raises(UserError, match=r"loss is not finite at step 5; stopped without saving"):
        train("pretrain", _cfg(train_setup), out=run, resume=True)
    assert _tree(run / "checkpoints") == before  # nothing overwritten, nothing pruned


def test_a_torn_metrics_line_is_dropped_on_resume(finished, train_setup, tmp_path):
    run = _killed_copy(finished, tmp_path, drop_steps=[6])
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 6, "loss": 3.1')  # killed mid-append
    train("pretrain", _cfg(train_setup), out=run, resume=True)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    _same_adapter(run, finished[1])


# ---------------------------------------------------------------- 6. a failure is one line and a usable folder
@pytest.mark.parametrize("bad", ["batch_too_large", "never_extended"])
def test_a_failed_start_leaves_no_run_folder_and_the_fixed_command_runs(train_setup, tmp_path, data_dir, bad):
    out = tmp_path / "run"
    if bad == "batch_too_large":
        cfg, match = _cfg(train_setup, micro_batch_size=4096), "fewer than one step needs"
    else:  # rows=new on a model that never went through `extend`
        base = save_tiny_model("llama", load_base_tokenizer(data_dir, "mistral", tmp_path / "t"), tmp_path / "b",
                               hidden=8, layers=1)
        cfg, match = _cfg(train_setup, model=str(base)), "new_tokens.json"
    with pytest.raises(UserError, match=match):
        train("align", cfg, out=out)
    assert not out.exists()
    assert train("align", _cfg(train_setup, max_steps=2), out=out)["steps"] == 2  # no --resume needed


def test_a_run_that_never_reached_step_one_restarts_with_another_config(train_setup, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_config.json").write_text(json.dumps({"fingerprint": "x", "config": {"max_steps": 99}}))
    assert train("align", _cfg(train_setup, max_steps=2), out=out)["steps"] == 2


def test_a_failed_stage_leaves_no_folders_it_created(tmp_path):
    def broken(tmp: Path) -> dict:
        raise UserError("input.jsonl:3: not JSON")

    with pytest.raises(UserError):
        run_stage(tmp_path / "runs" / "new" / "tok", stage="demo", config={}, inputs=[], work=broken)
    assert list(tmp_path.iterdir()) == []
    _stage(tmp_path / "runs" / "new" / "tok")  # a success keeps them
    assert (tmp_path / "runs" / "new" / "tok" / "made.txt").is_file()


@pytest.mark.parametrize("where", ["parent_is_a_file", "read_only_fs"])
def test_an_unwritable_output_is_one_line(tmp_path, train_setup, capsys, where):
    if where == "parent_is_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:  # read-only for root too (chmod would not stop root)
        out = Path("/proc/self/langgraft-out")
    with pytest.raises(UserError, match="cannot write there"):
        _stage(out)
    with pytest.raises(UserError, match="cannot write there"):
        train("align", _cfg(train_setup), out=out)
    assert main(["eval", "--compare", str(tmp_path), "--out", str(out / "x")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_non_utf8_task_data_is_one_line(tmp_path):
    from langgraft.eval.records import read_records
    from langgraft.eval.tasks import DataSpec

    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    (tmp_path / "a.txt").write_bytes(b"ok\n\xff\xfe\n")
    (tmp_path / "b.txt").write_text("ok\nok\n")
    for spec in (DataSpec(path="latin1.jsonl"), DataSpec(path="a.txt", format="lines", columns=["text"]),
                 DataSpec(format="parallel", files={"x": "a.txt", "y": "b.txt"})):
        with pytest.raises(UserError, match=r"task t: .*: not valid UTF-8 \(byte 0x"):
            read_records(spec, tmp_path, "t")


def test_extend_without_model_tokenizer_needs_trust_tokenizer(tmp_path, data_dir, capsys):
    from helpers import make_extended_tokenizer

    tok_dir = make_extended_tokenizer(data_dir, "mistral", tmp_path / "tok", n_new=5)
    base = save_tiny_model("llama", load_base_tokenizer(data_dir, "mistral", tmp_path / "bt"), tmp_path / "base",
                           hidden=8, layers=1)
    for name in os.listdir(base):
        if name.startswith(("tokenizer", "special_tokens")):
            (base / name).unlink()
    args = ["extend", "--model", str(base), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "ext")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-tokenizer" in err[0] and "no tokenizer files" in err[0]
    assert not (tmp_path / "ext").exists()
    assert main(args + ["--trust-tokenizer"]) == 0
    assert "vocabulary sizes only" in capsys.readouterr().err


# ---------------------------------------------------------------- 15.1 fingerprints cover what changes the output
def test_an_edited_task_reruns_an_eval_and_an_unchanged_one_says_skipped(tmp_path, data_dir, capsys):
    tok = load_base_tokenizer(data_dir, "mistral", tmp_path / "tok")
    model = save_tiny_model("llama", tok, tmp_path / "m", hidden=8, layers=1)
    lines = english_lines(data_dir, 6)
    (tmp_path / "held.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    task = tmp_path / "bpc.yaml"
    spec = {**TASK, "name": "bpc_en", "lang": "en", "data": {"path": "held.jsonl"}}
    task.write_text(yaml.safe_dump(spec))
    args = ["eval", "--model", f"m={model}", "--tasks", str(task), "--data-root", str(tmp_path),
            "--out", str(tmp_path / "out")]

    def run(*extra) -> tuple[str, dict]:
        assert main(args + list(extra)) == 0
        return capsys.readouterr().out, json.loads((tmp_path / "out" / "results.json").read_text())

    printed, doc = run()
    assert "wrote" in printed
    printed, _ = run()
    assert "up to date, skipped" in printed and "wrote" not in printed
    task.write_text(yaml.safe_dump({**spec, "max_chars": 20}))
    printed, doc = run()
    assert "wrote" in printed and doc["tasks"]["bpc_en"]["spec"]["max_chars"] == 20
    printed, _ = run("--force")
    assert "wrote" in printed and "skipped" not in printed
    train_text = tmp_path / "train.txt"  # the training data checked for contamination is an input too
    train_text.write_text("unrelated text\n")
    assert "wrote" in run("--contamination", str(train_text))[0]
    assert "up to date, skipped" in run("--contamination", str(train_text))[0]
    train_text.write_text(lines[0] + "\n")
    assert "wrote" in run("--contamination", str(train_text))[0]


def test_an_unchanged_tokenizer_train_says_skipped_and_force_reruns(tmp_path, data_dir, capsys):
    text = tmp_path / "fa.txt"
    text.write_text("\n".join(persian_lines(data_dir, 300)), encoding="utf-8")
    args = ["tokenizer", "train", "--input", str(text), "--lang", "fa", "--vocab-size", "500", "--threads", "1",
            "--out", str(tmp_path / "tok")]
    assert main(args) == 0 and "wrote" in capsys.readouterr().out
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "up to date, skipped" in printed and "wrote" not in printed
    assert main(args + ["--force"]) == 0 and "wrote" in capsys.readouterr().out


def test_builds_in_the_same_second_are_told_apart(tmp_path):
    """A forced rebuild that starts in the same second as the last one and takes as long is still a new output
    (the CLI's "up to date, skipped" and the pipeline's "ran" are decided by the output's stamp)."""
    out = tmp_path / "out"
    stamps = []
    for _ in range(4):
        _stage(out, config={"same": True}, force=True)
        stamps.append(output_stamp(out))
    assert len({s[0] for s in stamps}) == 1  # one fingerprint: the same config and inputs every time
    assert len(set(stamps)) == 4


def test_a_dataset_rebuilt_in_place_is_not_up_to_date(train_setup, tmp_path, capsys):
    import shutil

    data = tmp_path / "fa"
    shutil.copytree(train_setup["dataset"], data)
    cfg = _cfg(train_setup, max_steps=2, checkpoint_every=1, **{"data.dataset": str(data)})
    train("align", cfg, out=tmp_path / "run")
    assert train("align", cfg, out=tmp_path / "run")["steps"] == 2  # unchanged: up to date
    time.sleep(1.1)  # a rebuild is a later write
    make_dataset(tmp_path, "fa", ["another corpus entirely, rebuilt in place"] * 60, [])
    with pytest.raises(UserError, match="holds a finished run built on another dataset.*--force"):
        train("align", cfg, out=tmp_path / "run")
    (tmp_path / "run" / "manifest.json").unlink()  # as if killed mid-run: resuming on other data is refused too
    with pytest.raises(UserError, match="--resume .*dataset was rebuilt since it started"):
        train("align", cfg, out=tmp_path / "run", resume=True)
    assert train("align", cfg, out=tmp_path / "run", force=True)["steps"] == 2


def test_a_forked_child_does_not_keep_its_killed_parents_lock(tmp_path):
    out = tmp_path / "out"
    # the child says "ready" once fork has returned in it (its at-fork handlers have run), the parent its pid
    # (one os.write each: two processes' print() calls can interleave mid-line on the shared pipe)
    code = ("import os, sys, time\nfrom langgraft.rundir import output_lock\nwith output_lock(sys.argv[1]):\n"
            "    child = os.fork()\n    if child == 0:\n        os.write(1, b'ready\\n')\n        time.sleep(60)\n"
            "        os._exit(0)\n    os.write(1, f'{child}\\n'.encode())\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = {proc.stdout.readline().strip() for _ in range(2)}
    pids = [line for line in lines if line.isdigit()]
    if not pids:
        proc.kill()
        pytest.fail(f"the locking process wrote {sorted(lines)}: {proc.communicate()[1][-2000:]}")
    child = int(pids[0])
    try:
        proc.kill()
        proc.wait()
        assert alive(child)  # a worker that outlives its parent for a moment must not hold the output
        assert not _stage(out).skipped
    finally:
        os.kill(child, signal.SIGKILL)


def test_two_runs_of_one_recipe_do_not_race(tmp_path):
    from langgraft.demo import _materialise
    from langgraft.pipeline.recipe import load_recipe
    from langgraft.pipeline.run import run_recipe

    _materialise(tmp_path / "demo", lambda line: None)
    recipe = tmp_path / "demo" / "recipe.yaml"
    holder = hold_lock(load_recipe(recipe, base_dir=tmp_path / "demo").out)
    try:
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            run_recipe(recipe, base_dir=tmp_path / "demo", log=lambda line: None)
    finally:
        holder.kill()
        holder.wait()
