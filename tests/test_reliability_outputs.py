"""Fault suite, what an output may replace and how it is written (docs/RELIABILITY.md, promises 1 and 3):
`--force` reruns only an output of the verb's own stage, never the working directory or a folder holding an
input (`rundir.check_out`, `rundir.check_replaceable`); files in an output folder are never written through a
link (`rundir.open_output`); names read back from files are checked before they become file names
(`rundir.check_name`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import (english_lines, load_base_tokenizer, make_dataset, make_extended_model, persian_lines,
                     save_tiny_model)

from langgraft.cli import main
from langgraft.errors import UserError
from langgraft.rundir import read_manifest, run_stage


def _tree(path: Path) -> dict[str, bytes]:
    """Every file's bytes and every link's target under `path` (the console log the CLI appends is not content)."""
    tree = {}
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            tree[str(p.relative_to(path))] = os.readlink(p).encode()
        elif p.is_file() and p.name != "langgraft.log":
            tree[str(p.relative_to(path))] = p.read_bytes()
    return tree


def _one_error(capsys, *needles: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("langgraft: error:")]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir):
    """An extended tiny model (an `extend` output), a dataset, a finished 2-step run and an eval task."""
    from langgraft.config import from_dict
    from langgraft.train.config import TrainConfig
    from langgraft.train.stages import train

    tmp = tmp_path_factory.mktemp("outputs")
    model = make_extended_model(tmp / "x", data_dir, n_new=5)
    fa = persian_lines(data_dir, 60)
    dataset = make_dataset(tmp / "data", "fa", fa[:50], fa[50:])
    raw = {"model": str(model), "data": {"dataset": str(dataset), "block_size": 16}, "micro_batch_size": 2,
           "max_steps": 2, "checkpoint_every": 1, "eval_every": 0, "precision": "fp32",
           "lora": {"targets": ["q_proj", "v_proj"]}}
    train("pretrain", from_dict(TrainConfig, raw), out=tmp / "run")
    (tmp / "held.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in english_lines(data_dir, 4)))
    task = {"name": "bpc_en", "lang": "en", "kind": "intrinsic", "metrics": ["bpc"], "text": "text",
            "data": {"path": "held.jsonl"}}
    (tmp / "fa.txt").write_text("\n".join(persian_lines(data_dir, 200)), encoding="utf-8")
    return {"model": model, "dataset": dataset, "run": tmp / "run", "task": task, "tmp": tmp, "raw": raw}


def _train_args(setup, out, *extra) -> list[str]:
    return ["train", "--stage", "pretrain", f"model={setup['model']}", f"data.dataset={setup['dataset']}",
            "data.block_size=16", "micro_batch_size=2", "max_steps=1", "precision=fp32", "eval_every=0",
            "--out", str(out), *extra]


def _tok_args(setup, out, *extra) -> list[str]:
    return ["tokenizer", "train", "--input", str(setup["tmp"] / "fa.txt"), "--lang", "fa", "--vocab-size", "500",
            "--threads", "1", "--out", str(out), *extra]


# ---------------------------------------------------------------- 2. --force and the output guard
@pytest.mark.parametrize("project", ["readme_and_src", "foreign_config", "config_only_not_ours"])
def test_train_force_never_deletes_a_folder_that_merely_holds_a_train_config(setup, tmp_path, capsys, project):
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.py").write_text("print('mine')")
    (folder / "README.md").write_text("my project")
    (folder / "train_config.json").write_text(json.dumps({"fingerprint": "x", "config": {}}))
    if project == "foreign_config":  # a config of the user's own tool
        (folder / "train_config.json").write_text(json.dumps({"lr": 0.1, "epochs": 3}))
    if project == "config_only_not_ours":
        shutil.rmtree(folder / "src")
        (folder / "README.md").unlink()
        (folder / "train_config.json").write_text("lr: 0.1\n")
    before = _tree(folder)
    assert main(_train_args(setup, folder, "--force")) == 2
    _one_error(capsys, str(folder), "not a langgraft training run")
    assert _tree(folder) == before


def test_train_force_still_discards_its_own_run(setup, tmp_path, capsys):
    shutil.copytree(setup["run"], tmp_path / "run")
    assert main(_train_args(setup, tmp_path / "run", "--force")) == 0
    assert "discarding the run" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["summary"]["steps"] == 1


@pytest.mark.parametrize("verb", ["tokenizer-train", "train", "compare"])
@pytest.mark.parametrize("how", ["dot", "pwd", "parent", "link_to_cwd", "home"])
def test_no_verb_replaces_or_empties_the_working_directory(setup, tmp_path, monkeypatch, capsys, verb, how):
    """The working directory is an earlier output of the same verb, as when one `cd`s into it: still refused."""
    cwd = tmp_path / "work" / "here"
    if verb == "tokenizer-train":
        assert main(_tok_args(setup, cwd)) == 0
    elif verb == "train":
        shutil.copytree(setup["run"], cwd)
    else:
        evals = tmp_path / "e"
        run_stage(evals, stage="eval", config={}, inputs=[],
                  work=lambda t: (t / "results.json").write_text('{"models": {}, "tasks": {}, "errors": []}'))
        assert main(["eval", "--compare", str(evals), "--out", str(cwd)]) == 0
    (tmp_path / "link").symlink_to(cwd)
    out = {"dot": ".", "pwd": str(cwd), "parent": "..", "link_to_cwd": str(tmp_path / "link"), "home": "~"}[how]
    monkeypatch.chdir(cwd)
    if how == "home":  # the home folder, from elsewhere
        monkeypatch.setenv("HOME", str(cwd))
        out = os.path.expanduser("~")
        monkeypatch.chdir(tmp_path)
    before, inode = _tree(tmp_path / "work"), os.stat(cwd).st_ino
    capsys.readouterr()
    argv = {"tokenizer-train": _tok_args(setup, out, "--force"), "train": _train_args(setup, out, "--force"),
            "compare": ["eval", "--compare", str(tmp_path / "e"), "--out", out, "--force"]}[verb]
    assert main(argv) == 2
    _one_error(capsys, "is the working directory, a folder holding it, $HOME or /")
    assert os.stat(cwd).st_ino == inode and _tree(tmp_path / "work") == before


@pytest.mark.parametrize("verb", ["eval", "export"])
def test_force_never_replaces_the_model_being_read(setup, tmp_path, capsys, verb):
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    before = _tree(model)
    if verb == "eval":
        (tmp_path / "held.jsonl").write_text((setup["tmp"] / "held.jsonl").read_text())
        (tmp_path / "t.yaml").write_text(yaml.safe_dump(setup["task"]))
        argv = ["eval", "--model", f"m={model}", "--tasks", str(tmp_path / "t.yaml"), "--data-root", str(tmp_path),
                "--out", str(model), "--force"]
    else:
        run = tmp_path / "run"
        shutil.copytree(setup["run"], run)
        for name in ("train_config.json", "manifest.json"):  # the run as trained on this copy of the model
            path = run / name
            doc = json.loads(path.read_text())
            doc["config"]["model"] = str(model)
            path.write_text(json.dumps(doc))
        argv = ["export", "--run", str(run), "--out", str(model), "--force"]
    assert main(argv) == 2
    err = _one_error(capsys, f"--out {model}")
    assert "pass --force" not in err and "(or pass --force" not in err
    assert _tree(model) == before


@pytest.mark.parametrize("where", ["task_in_eval_out", "task_link_into_out", "config_in_prepare_out"])
def test_a_config_or_task_file_inside_its_own_output_is_never_deleted(setup, tmp_path, capsys, where, data_dir):
    out = tmp_path / "out"
    if where == "config_in_prepare_out":
        run_stage(out, stage="data prepare", config={}, inputs=[], work=lambda t: None)
        import langgraft.demo

        cfg = out / "data.yaml"  # the demo's data config, reading the shipped corpus
        spec = yaml.safe_load((Path(langgraft.demo.__file__).parent / "data.yaml").read_text())
        cfg.write_text(yaml.safe_dump({**spec, "root": str(Path(langgraft.demo.__file__).parent)}))
        argv = ["data", "prepare", "--config", str(cfg), "--out", str(out), "--force"]
    else:
        (tmp_path / "held.jsonl").write_text((setup["tmp"] / "held.jsonl").read_text())
        tiny = save_tiny_model("llama", load_base_tokenizer(data_dir, "gpt2", tmp_path / "bt"), tmp_path / "m",
                               hidden=8, layers=1)
        base = ["eval", "--model", f"m={tiny}", "--data-root", str(tmp_path), "--out", str(out)]
        (tmp_path / "t0.yaml").write_text(yaml.safe_dump(setup["task"]))
        assert main([*base, "--tasks", str(tmp_path / "t0.yaml")]) == 0
        task = out / "my_task.yaml"
        task.write_text(yaml.safe_dump({**setup["task"], "max_chars": 50}))
        if where == "task_link_into_out":
            (tmp_path / "link.yaml").symlink_to(task)
            task = tmp_path / "link.yaml"
        argv = [*base, "--tasks", str(task), "--force"]
    before = _tree(out)
    capsys.readouterr()
    assert main(argv) == 2
    _one_error(capsys, f"--out {out}: holds the input")
    assert _tree(out) == before


def test_run_never_overwrites_a_users_pipeline_json(tmp_path, capsys, monkeypatch):
    from langgraft.demo import _materialise

    _materialise(tmp_path / "demo", lambda line: None)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "pipeline.json").write_text('{"steps": ["my", "own", "pipeline"]}')
    (user / "notes.md").write_text("mine")
    before = _tree(user)
    monkeypatch.chdir(tmp_path / "demo")
    assert main(["run", "recipe.yaml", f"out={user}", "--to", "data"]) == 2
    _one_error(capsys, "pipeline.json was not written by `langgraft run`")
    assert _tree(user) == before


@pytest.mark.parametrize("extra", ["corpus_and_recipe", "corpus_recipe_and_src"])
def test_demo_never_adopts_a_project_that_has_corpus_and_recipe(tmp_path, extra):
    from langgraft.demo import _materialise

    project = tmp_path / "project"
    (project / "corpus").mkdir(parents=True)
    (project / "corpus" / "fa.txt").write_text("my corpus", encoding="utf-8")
    (project / "recipe.yaml").write_text("out: runs/mine\n")
    if extra == "corpus_recipe_and_src":
        (project / "src").mkdir()
        (project / "src" / "x.py").write_text("pass")
    before = _tree(project)
    with pytest.raises(UserError, match="not a langgraft demo folder"):
        _materialise(project, lambda line: None)
    assert _tree(project) == before and not (project / ".demo.json").exists()


@pytest.mark.parametrize("settings", ["users_json", "not_json", "link"])
def test_generate_never_deletes_a_users_settings_file(setup, tmp_path, capsys, data_dir, settings):
    tiny = save_tiny_model("llama", load_base_tokenizer(data_dir, "gpt2", tmp_path / "bt"), tmp_path / "m",
                           hidden=8, layers=1)
    (tmp_path / "in.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    out = tmp_path / "answers.jsonl"
    meta = tmp_path / "answers.jsonl.settings.json"
    if settings == "users_json":
        meta.write_text('{"theme": "dark"}')
    elif settings == "not_json":
        meta.write_text("my settings")
    else:
        (tmp_path / "elsewhere.json").write_text('{"mine": 1}')
        meta.symlink_to(tmp_path / "elsewhere.json")
    before = _tree(tmp_path)
    assert main(["generate", "--model", str(tiny), "--input", str(tmp_path / "in.jsonl"), "--out", str(out),
                 "--max-new-tokens", "2"]) == 2
    _one_error(capsys, str(meta), "not written by `langgraft generate`")
    assert _tree(tmp_path) == before and not out.exists()


def test_a_verb_never_replaces_another_stages_output_even_with_force(tmp_path, capsys, setup):
    out = tmp_path / "prepared"
    run_stage(out, stage="data prepare", config={}, inputs=[], work=lambda t: (t / "ds.txt").write_text("data"))
    before = _tree(out)
    assert main(_tok_args(setup, out, "--force")) == 2
    err = _one_error(capsys, "holds a `data prepare` output, not a `tokenizer-train` one")
    assert "(or pass --force" not in err and _tree(out) == before
    assert read_manifest(out)["stage"] == "data prepare"


# ---------------------------------------------------------------- 3. writes through links
def _killed(setup, tmp_path: Path) -> Path:
    """The finished 2-step run as a kill before its end would have left it (checkpoints 1 and 2, no adapter)."""
    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    (run / "manifest.json").unlink()
    shutil.rmtree(run / "adapter")
    return run


def _resume_args(setup, run: Path) -> list[str]:
    raw = setup["raw"]
    return ["train", "--stage", "pretrain", f"model={raw['model']}", f"data.dataset={raw['data']['dataset']}",
            "data.block_size=16", "micro_batch_size=2", "max_steps=2", "checkpoint_every=1", "eval_every=0",
            "precision=fp32", "lora.targets=[q_proj,v_proj]", "--resume", "--out", str(run)]


@pytest.mark.parametrize("planted", ["metrics_symlink", "log_symlink", "metrics_hardlink", "data_cache_tmp_link",
                                     "checkpoint_symlink", "dangling_log_link"])
def test_resume_never_writes_through_a_link_in_the_run_folder(setup, tmp_path, capsys, planted):
    run = _killed(setup, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    name = {"metrics_symlink": "metrics.jsonl", "log_symlink": "langgraft.log", "metrics_hardlink": "metrics.jsonl",
            "data_cache_tmp_link": ".packed-data.tmp-1-x", "dangling_log_link": "langgraft.log"}.get(planted)
    if planted == "metrics_hardlink":
        (run / name).unlink()
        os.link(victim, run / name)
    elif planted == "checkpoint_symlink":
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "state.pt").write_text("my file")
        (run / "checkpoints" / "step-00000009").symlink_to(mine)
        victim = mine / "state.pt"
    elif planted == "dangling_log_link":
        victim = tmp_path / "created-by-langgraft.txt"
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
    else:
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
    before = victim.read_bytes() if victim.exists() else None
    capsys.readouterr()
    assert main(_resume_args(setup, run)) == 2
    _one_error(capsys, str(run), "link")
    assert (victim.read_bytes() if victim.exists() else None) == before


def test_a_checkpoint_name_with_a_newline_is_not_a_checkpoint(setup, tmp_path, capsys):
    run = _killed(setup, tmp_path)
    odd = run / "checkpoints" / "step-00000009\nattacker: text"
    shutil.copytree(run / "checkpoints" / "step-00000002", odd)
    (odd / "state.pt").write_bytes(b"damaged")  # a damaged newest checkpoint is named on the console
    capsys.readouterr()
    assert main(_resume_args(setup, run)) == 0
    printed = capsys.readouterr()
    log = (run / "langgraft.log").read_text()
    assert "attacker" not in printed.out + printed.err and "attacker" not in log
    assert odd.is_dir()  # not ours, so not pruned either


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_the_console_log_is_never_appended_through_a_link(setup, tmp_path, capsys, link):
    """A rerun of a stage output (up to date) appends to its langgraft.log: a link there is skipped, not followed."""
    out = tmp_path / "tok"
    assert main(_tok_args(setup, out)) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "langgraft.log").unlink()
    if link == "symlink":
        (out / "langgraft.log").symlink_to(victim)
    else:
        os.link(victim, out / "langgraft.log")
    capsys.readouterr()
    assert main(_tok_args(setup, out)) == 0  # the verb's own result stands
    printed = capsys.readouterr()
    assert victim.read_text() == "precious\n"
    assert "up to date, skipped" in printed.out and "the console log was not written" in printed.err


@pytest.mark.parametrize("planted", ["dangling", "to_users_file"])
def test_generate_never_writes_through_a_linked_out(tmp_path, capsys, data_dir, planted):
    tiny = save_tiny_model("llama", load_base_tokenizer(data_dir, "gpt2", tmp_path / "bt"), tmp_path / "m",
                           hidden=8, layers=1)
    (tmp_path / "in.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    victim = tmp_path / "victim.jsonl"
    out = tmp_path / "answers.jsonl"
    args = ["generate", "--model", str(tiny), "--input", str(tmp_path / "in.jsonl"), "--out", str(out),
            "--max-new-tokens", "2"]
    if planted == "to_users_file":  # a finished output (and its settings) whose file is then swapped for a link
        assert main(args) == 0
        out.rename(victim)
        with (tmp_path / "in.jsonl").open("a") as fh:
            fh.write(json.dumps({"prompt": "one more"}) + "\n")
    out.symlink_to(victim)
    capsys.readouterr()
    before = victim.read_bytes() if victim.exists() else None
    assert main(args) == 2
    _one_error(capsys, str(out), "symbolic link")
    assert (victim.read_bytes() if victim.exists() else None) == before


# ---------------------------------------------------------------- 4. names read back from files
@pytest.fixture(scope="module")
def an_eval(setup, tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("an_eval")
    tiny = save_tiny_model("llama", load_base_tokenizer(data_dir, "gpt2", tmp / "bt"), tmp / "m", hidden=8, layers=1)
    shutil.copy(setup["tmp"] / "held.jsonl", tmp / "held.jsonl")
    (tmp / "t.yaml").write_text(yaml.safe_dump({**setup["task"], "suites": ["intrinsic"]}))
    assert main(["eval", "--model", f"m={tiny}", "--tasks", str(tmp / "t.yaml"), "--data-root", str(tmp),
                 "--out", str(tmp / "e")]) == 0
    return tmp / "e"


@pytest.mark.parametrize("craft", ["suite_climbs", "suite_absolute", "suite_with_slash", "suite_newline",
                                   "task_climbs", "task_absolute", "not_json"])
def test_compare_checks_names_read_from_results_json(an_eval, tmp_path, capsys, craft):
    evals = tmp_path / "e"
    shutil.copytree(an_eval, evals)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"my picture")
    (tmp_path / "victim.jsonl").write_text("my rows\n")
    path = evals / "results.json"
    doc = json.loads(path.read_text())
    task = next(iter(doc["tasks"]))
    suite = {"suite_climbs": "../../../victim", "suite_absolute": str(tmp_path / "victim"),
             "suite_with_slash": "a/../../../../victim", "suite_newline": "ok\nattacker"}.get(craft)
    if suite is not None:
        doc["tasks"][task]["suites"] = [suite]
    elif craft in ("task_climbs", "task_absolute"):
        new = "../../../victim" if craft == "task_climbs" else str(tmp_path / "victim")
        doc["tasks"][new] = doc["tasks"].pop(task)
        for m in doc["results"]:
            doc["results"][m][new] = doc["results"][m].pop(task)
        shutil.copy(evals / "samples" / f"{task}.jsonl", tmp_path / "victim.jsonl")
    path.write_text("{not json" if craft == "not_json" else json.dumps(doc))
    outside = _tree(tmp_path)
    assert main(["eval", "--compare", str(evals), "--out", str(tmp_path / "out")]) == 2
    _one_error(capsys, str(path))
    assert victim.read_bytes() == b"my picture" and not (tmp_path / "out").exists()
    assert _tree(tmp_path) == outside
