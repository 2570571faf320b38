"""`langgraft demo` / `langgraft run`: the whole pipeline end to end, reruns, slices, a killed run, bad recipes.

One demo run (module fixture, ~15-30 s on 2 busy cores) feeds the tests that use its folder. Tests change that
folder (a slice retrains align and makes pretrain stale, a rerun writes its log), so each one gets the finished run
as it was, put back in place first: the tests pass in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from langgraft.cli import main
from langgraft.demo import run_demo
from langgraft.errors import UserError
from langgraft.eval.metrics import fmt
from langgraft.pipeline.table import STAGES
from langgraft.pipeline.run import run_recipe

MODEL_STAGES = ("model_extend", "align/export", "pretrain/export", "instruct/export")


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory):
    """As a newcomer runs it: `langgraft demo` with its default relative folder, inside a git checkout. Returns the
    folder, run_demo's result and an untouched copy of the folder."""
    repo = tmp_path_factory.mktemp("clone")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    mask = os.umask(0o022)  # the usual umask: `test_every_file_of_the_demo_honours_the_umask` checks the modes
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(repo)
            result = run_demo("runs/demo", log=lambda line: None)
    finally:
        os.umask(mask)
    out = repo / "runs" / "demo"
    pristine = tmp_path_factory.mktemp("pristine") / "demo"
    shutil.copytree(out, pristine, symlinks=True)  # copy2: modes and mtimes kept, so every stage stays up to date
    return out, result, pristine


@pytest.fixture
def demo(finished_demo):
    """The finished demo folder as run_demo left it, whatever earlier tests did to it. Put back at its own path:
    the manifests record absolute paths, and a moved folder retrains."""
    out, result, pristine = finished_demo
    shutil.rmtree(out)
    shutil.copytree(pristine, out, symlinks=True)
    return out, result


def test_every_file_of_the_demo_honours_the_umask(demo):
    """Weights (model.safetensors, adapter_model.safetensors) too: 0644 files and 0755 folders under umask 022."""
    out, _ = demo
    paths = list(out.rglob("*"))
    names = {p.name for p in paths}
    assert {"model.safetensors", "adapter_model.safetensors", "tokenizer.json"} <= names
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in paths if not p.is_symlink()}
    wrong = {path: oct(mode) for path, mode in modes.items()
             if mode != (0o755 if (out / path).is_dir() else 0o644)}
    assert not wrong, wrong


def _manifest_times(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("manifest.json")}


def test_demo_runs_every_stage_and_reports(demo):
    out, result = demo
    assert [s for s, v in result["stages"].items() if v["status"] == "ran"] == list(STAGES)
    for stage in ("data", "tokenizer", "tokenizer_extend", *MODEL_STAGES, "report"):
        assert (out / stage / "manifest.json").is_file(), stage
    for point in ("base", "extended", "align", "pretrain", "instruct"):
        assert (out / "eval" / point / "results.json").is_file()
    # instruct tuned the pretrained model on both languages' instructions, responses only, none dropped
    inst = json.loads((out / "instruct/train/manifest.json").read_text())["summary"]
    stats = json.loads((out / "data/stats.json").read_text())["datasets"]["instructions"]
    assert inst["train_examples"] == stats["splits"]["train"]["records"] > 30 and inst["skipped"] == {}
    assert json.loads((out / "instruct/upstream.json").read_text())["model"][0] == \
        json.loads((out / "pretrain/export/manifest.json").read_text())["fingerprint"]
    summary = json.loads((out / "report" / "summary.json").read_text(encoding="utf-8"))
    fert = summary["tokenizer"]["fertility"]["fa"]
    assert fert["extended"] < fert["base"] / 2  # the Persian pieces cut Persian into far fewer tokens
    en = summary["tokenizer"]["unchanged"]["en"]
    assert en["identical"] == en["lines"] > 0  # English ids bit-identical
    fa_bpc = summary["intrinsic"]["fa"]["demo_bpc_fa"]["values"]
    assert list(fa_bpc) == ["base", "extended", "align", "pretrain", "instruct"]
    assert fa_bpc["pretrain"] < fa_bpc["align"] < fa_bpc["base"]  # training on Persian lowers Persian bpc
    en_bpc = summary["intrinsic"]["en"]["demo_bpc_en"]["values"]
    # old-token logits are unchanged; only the softmax mass the new rows take moves English bpc (a 400 → ~700
    # vocabulary makes that larger than on a real base)
    assert abs(en_bpc["extended"] - en_bpc["base"]) < 0.1 * en_bpc["base"]
    assert "demo_sentiment_fa" in summary["classification"]["fa"]
    # + a line per training stage (tokens, characters seen, seconds) and the text per second of both bpc tasks
    assert len(summary["lines"]) == 5 + 3 + 2 and list(summary["training"]) == ["align", "pretrain", "instruct"]
    report = (out / "report" / "eval" / "report.md").read_text(encoding="utf-8")
    assert "demo_bpc_fa" in report and "pretrain" in report
    # the recipe in the demo folder is a normal recipe whose first line says how to run it
    assert (out / "recipe.yaml").read_text(encoding="utf-8").startswith("# langgraft demo")


def test_run_inside_the_demo_folder_skips_every_stage(demo, capsys, monkeypatch):
    out, _ = demo
    before = _manifest_times(out)
    monkeypatch.chdir(out)  # the README's next step: `langgraft run recipe.yaml` in the demo folder
    assert main(["run", "recipe.yaml"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("up to date, skipped") == len(STAGES)
    assert _manifest_times(out) == before  # nothing rebuilt
    log = (out / "langgraft.log").read_text(encoding="utf-8")  # the run's console, in the recipe's out folder
    assert "langgraft run recipe.yaml (exit 0" in log and all(line in log for line in printed.splitlines())


@pytest.mark.parametrize("named", ["runs/demo", "./runs/demo", "runs/../runs/demo", "link", "ABS"])
def test_recipe_paths_are_the_same_from_any_working_directory(tmp_path, monkeypatch, named):
    from langgraft.demo import demo_file
    from langgraft.pipeline.recipe import load_recipe, task_items

    folder = tmp_path / "runs" / "demo"
    (folder / "corpus").mkdir(parents=True)
    (folder / "base").mkdir()  # `langgraft demo` builds the base model there
    for name in ("recipe.yaml", "data.yaml"):
        shutil.copyfile(demo_file(name), folder / ("corpus/" if name == "data.yaml" else "") / name)
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(tmp_path)
    named = str(folder) if named == "ABS" else named
    outside = load_recipe(Path(named) / "recipe.yaml", base_dir=named)
    monkeypatch.chdir(folder)
    inside = load_recipe("recipe.yaml")
    assert outside.out == inside.out == folder.resolve()
    assert outside.base_model == inside.base_model == str(folder.resolve() / "base")
    assert task_items(outside) == task_items(inside)
    assert outside.path("corpus/fa.txt") == inside.path("corpus/fa.txt")


def test_rerun_skips_every_stage_and_prints_summary(demo, capsys):
    out, _ = demo
    before = _manifest_times(out)
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert _manifest_times(out) == before  # nothing rebuilt
    assert printed.count("up to date, skipped") == len(STAGES)
    assert "report: " in printed and "fa fertility" in printed and "demo_bpc_en bpc: base" in printed


def test_model_cards_carry_the_runs_own_numbers(demo):
    """Each export's README.md lists the evaluations before it; report/MODEL_CARD.md has all of them."""
    out, _ = demo
    compared = json.loads((out / "report" / "eval" / "results.json").read_text(encoding="utf-8"))
    card = (out / "report" / "MODEL_CARD.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["language"] == ["fa", "en"] and {"align", "pretrain", "instruct"} <= set(header["tags"])
    assert "| task | lang | metric | n | " + " | ".join(compared["models"]) + " |" in card
    for task, meta in compared["tasks"].items():
        metric = meta["metrics"][0]
        value = compared["results"]["instruct"][task][metric]["value"]
        row = next(line for line in card.splitlines() if line.startswith(f"| {task} |"))
        assert row.rstrip(" |").endswith(f" {fmt(metric, value, unit=True)}"), row  # as every report prints it
    fert = json.loads((out / "report" / "summary.json").read_text())["tokenizer"]["fertility"]["fa"]
    assert f"base {fert['base']:.3f} → extended {fert['extended']:.3f}" in card
    instruct_card = (out / "instruct" / "export" / "model" / "README.md").read_text(encoding="utf-8")
    table_head = next(line for line in instruct_card.splitlines() if line.startswith("| task |"))
    assert "pretrain" in table_head and "instruct" not in table_head  # evaluated after its export


def test_report_charts_use_what_the_run_has(demo, tmp_path):
    """Training curves per stage; the Persian-vs-English chart falls back to bpc (the demo's English side has no
    scored task) or is left out; equal points share a label; per-token ppl is not ranked across tokenizers."""
    from langgraft.eval.report import _same_point, scatter_axes, write_report

    out, _ = demo
    report = out / "report"
    summary_md = (report / "summary.md").read_text(encoding="utf-8")
    for stage in ("align", "pretrain", "instruct"):
        assert (report / "training" / f"{stage}.png").stat().st_size > 5_000
        assert f"(training/{stage}.png)" in summary_md
    doc = json.loads((report / "eval/results.json").read_text(encoding="utf-8"))
    kind, fa, en, models = scatter_axes(doc)
    assert kind == "bpc" and models == list(doc["models"]) and all(fa[m] > 0 and en[m] > 0 for m in models)
    md = (report / "eval/report.md").read_text(encoding="utf-8")
    assert (report / "eval/charts/fa_vs_en.png").is_file() and "charts/fa_vs_en.png" in md
    # base and extended tokenizers: ppl (per token) gets no paired tests and no "best", bpc does
    assert len(set(doc["tokenizers"].values())) == 2
    assert not [c for c in doc["comparisons"] if c["metric"] == "ppl"]
    assert [c for c in doc["comparisons"] if c["metric"] == "bpc"]
    ppl_rows = [line for line in md.splitlines() if "| ppl ↓ †" in line]
    assert ppl_rows and not any("**" in line for line in ppl_rows) and "† ppl is per token" in md

    only_fa = {**doc, "tasks": {t: m for t, m in doc["tasks"].items() if m["lang"] == "fa"}}
    write_report(tmp_path / "fa-only", only_fa)
    assert not (tmp_path / "fa-only/charts/fa_vs_en.png").exists()
    assert "fa_vs_en" not in (tmp_path / "fa-only/report.md").read_text(encoding="utf-8")

    # the sentiment task read as both languages: models with equal accuracy get one label between them
    task = "demo_sentiment_fa"
    both = {**doc, "tasks": {task: doc["tasks"][task], "as_en": {**doc["tasks"][task], "lang": "en"}},
            "results": {m: {task: r[task], "as_en": r[task]} for m, r in doc["results"].items()}}
    kind, fa, en, models = scatter_axes(both)
    groups = _same_point(models, [en[m] for m in models], [fa[m] for m in models])
    assert kind == "score" and len(groups) == len({fa[m] for m in models})
    assert sorted(m for names in groups.values() for m in names) == sorted(models)
    write_report(tmp_path / "both", both)
    assert (tmp_path / "both/charts/fa_vs_en.png").is_file()


def test_slice_reruns_only_its_stages_and_marks_downstream_stale(demo, capsys):
    out, _ = demo
    recipe = out / "recipe.yaml"
    overrides = yaml.safe_load(recipe.read_text(encoding="utf-8"))["align"]["overrides"]
    changed = [f"align.overrides=[{', '.join(overrides + ['max_steps=31'])}]"]
    before = _manifest_times(out)
    result = run_recipe(recipe, changed, start="align", stop="align", base_dir=out, log=lambda line: None)
    assert list(result["stages"]) == ["align"] and result["stages"]["align"]["status"] == "ran"
    after = _manifest_times(out)
    assert after["align/export/manifest.json"] != before["align/export/manifest.json"]
    assert after["pretrain/export/manifest.json"] == before["pretrain/export/manifest.json"]  # not in the slice
    assert json.loads((out / "align/train/manifest.json").read_text())["summary"]["steps"] == 31
    # pretrain was trained on the old aligned model: running it again retrains instead of skipping
    result = run_recipe(recipe, changed, start="pretrain", stop="pretrain", base_dir=out, log=lambda line: None)
    assert result["stages"]["pretrain"]["status"] == "ran"
    assert "an upstream stage was rebuilt" in capsys.readouterr().err


def test_run_releases_memory_after_every_stage_and_between_training_and_export(demo, monkeypatch):
    """Each stage's peak starts from what is alive, not from the earlier stages' leftovers (tests/test_pipeline_heap.py
    shows what `release_memory` frees)."""
    out, _ = demo
    calls = []
    monkeypatch.setattr("langgraft.pipeline.run.release_memory", lambda: calls.append("stage"))
    monkeypatch.setattr("langgraft.pipeline.stages.release_memory", lambda: calls.append("training"))
    result = run_recipe(out / "recipe.yaml", start="align", stop="pretrain", base_dir=out, log=lambda line: None)
    assert list(result["stages"]) == ["align", "pretrain"]
    # per training stage: after training, after the export, after the stage
    assert calls == ["training", "training", "stage"] * 2


def test_chat_stages_prompt_that_stage_through_its_chat_template(demo):
    out, _ = demo
    before = json.loads((out / "eval/pretrain/manifest.json").read_text())["fingerprint"]
    run_recipe(out / "recipe.yaml", ["eval.chat_stages=[instruct]"], start="instruct", stop="instruct",
               base_dir=out, log=lambda line: None)
    assert json.loads((out / "eval/instruct/manifest.json").read_text())["config"]["options"]["chat"] is True
    rows = [json.loads(line) for line in (out / "eval/instruct/samples/demo_sentiment_fa.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("### Instruction:\n") and rows[0]["prompt"].endswith("### Response:\n")
    assert json.loads((out / "eval/pretrain/manifest.json").read_text())["fingerprint"] == before  # untouched


def test_a_recipe_without_instruct_dataset_stops_after_pretrain(demo, tmp_path):
    out, _ = demo
    result = run_recipe(out / "recipe.yaml", ["instruct.dataset=''"], start="instruct", base_dir=out,
                        log=lambda line: None)
    assert result["stages"]["instruct"]["status"] == "not configured"
    assert list(json.loads((out / "report/summary.json").read_text())["stages"]) == \
        ["base", "extended", "align", "pretrain"]


def test_a_train_configs_model_and_dataset_are_not_used_and_the_run_says_so(demo):
    """Under `run` a training stage trains the previous stage's model on the recipe's dataset: a `model` or
    `data.dataset` in the stage's own config changes nothing (the stage stays up to date) and gets one line."""
    out, _ = demo
    recipe = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["align"]["overrides"] += ["model=elsewhere", "data.dataset=elsewhere/en_fa"]
    (out / "recipe_own_model.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    run_recipe(out / "recipe.yaml", start="align", stop="align", base_dir=out, log=lambda line: None)  # up to date
    lines: list[str] = []
    try:
        result = run_recipe(out / "recipe_own_model.yaml", start="align", stop="align", base_dir=out,
                            log=lines.append)
    finally:
        (out / "recipe_own_model.yaml").unlink()
    assert result["stages"]["align"]["status"] == "skipped"
    said = [line for line in lines if "not used" in line]
    assert said == [f"  align: model and data.dataset in align.overrides not used: the run trains "
                    f"{out / 'model_extend'} on {out / 'data' / 'en_fa'}"]


def test_to_and_from_need_earlier_outputs(demo, tmp_path):
    out, _ = demo
    fresh = tmp_path / "fresh"
    result = run_recipe(out / "recipe.yaml", [f"out={fresh}"], stop="tokenizer", base_dir=out,
                        log=lambda line: None)
    assert list(result["stages"]) == ["data", "tokenizer"]
    assert sorted(p.name for p in fresh.iterdir() if not p.name.startswith(".")) == \
        ["data", "pipeline.json", "tokenizer"]
    with pytest.raises(UserError, match="stage tokenizer_extend has no finished output"):
        run_recipe(out / "recipe.yaml", [f"out={fresh}"], start="model_extend", base_dir=out)
    with pytest.raises(UserError, match="--from report comes after --to tokenizer"):
        run_recipe(out / "recipe.yaml", [f"out={fresh}"], start="report", stop="tokenizer", base_dir=out)


def test_tokenizer_trains_on_the_data_stages_own_dataset(demo, tmp_path):
    """tokenizer.dataset: the data stage runs first and the tokenizer reads its prepared, leak-guarded train split;
    the extended model is built with those pieces."""
    out, _ = demo
    fresh = tmp_path / "from-data"
    result = run_recipe(out / "recipe.yaml", [f"out={fresh}", "tokenizer.input=[]", "tokenizer.dataset=fa_mono",
                                              "eval.stages=[]"], stop="model_extend", base_dir=out,
                        log=lambda line: None)
    assert list(result["stages"]) == ["data", "tokenizer", "tokenizer_extend", "model_extend"]
    assert {v["status"] for v in result["stages"].values()} == {"ran"}
    manifest = json.loads((fresh / "tokenizer/manifest.json").read_text(encoding="utf-8"))
    split = str(fresh / "data" / "fa_mono")
    assert list(manifest["inputs"]) == [split] and manifest["config"]["splits"] == {split: "train"}
    report = json.loads((fresh / "tokenizer/train_report.json").read_text(encoding="utf-8"))
    stats = json.loads((fresh / "data/stats.json").read_text(encoding="utf-8"))["datasets"]["fa_mono"]
    assert report["records"] == stats["splits"]["train"]["records"] > 0  # the train split only, all of it
    assert (fresh / "model_extend/manifest.json").is_file()


@pytest.mark.parametrize("name", ["fa_mnoo", "FA_MONO", "data:fa_mono", "en_fa/"])
def test_unknown_tokenizer_dataset_is_one_line_at_load(demo, tmp_path, capsys, monkeypatch, name):
    out, _ = demo
    monkeypatch.chdir(out)
    target = tmp_path / "o"
    assert main(["run", "recipe.yaml", f"out={target}", f"tokenizer.dataset={name}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"tokenizer.dataset {name!r} is not a dataset of data.config" in err
    assert not target.exists()


def test_validation_only_tokenizer_dataset_is_one_line_at_load(tmp_path):
    from langgraft.pipeline.recipe import load_recipe

    (tmp_path / "data.yaml").write_text("root: .\ndatasets:\n  - {name: fa_val, validation_fraction: 1.0, "
                                        "sources: [{path: fa.txt}]}\n", encoding="utf-8")
    recipe = _write_recipe(tmp_path, "out: o\ntokenizer: {dataset: fa_val}\ndata: {config: data.yaml}\n")
    with pytest.raises(UserError, match="tokenizer.dataset 'fa_val' has no train split") as err:
        load_recipe(recipe, base_dir=tmp_path)
    assert len(str(err.value).splitlines()) == 1


def test_killed_run_resumes_from_first_unfinished_stage(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "langgraft", "demo", "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / "model_extend" / "manifest.json").is_file():
            assert proc.poll() is None, "demo subprocess ended before it could be killed"
            assert time.time() < deadline, "demo subprocess too slow"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "report" / "manifest.json").exists()  # killed before the end
    result = run_demo(out, log=lambda line: None)
    status = {s: v["status"] for s, v in result["stages"].items()}
    assert status["data"] == status["tokenizer"] == status["tokenizer_extend"] == "skipped"
    assert status["report"] == "ran" and (out / "report" / "summary.json").is_file()


def _write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_is_one_line_exit_2(tmp_path, capsys):
    recipe = _write_recipe(tmp_path, "out: runs/x\nalign:\n  datset: en_fa\n")
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key align.datset" in err


def test_unknown_key_in_a_stage_override_names_the_stage(demo, tmp_path, capsys, monkeypatch):
    out, _ = demo
    monkeypatch.chdir(out)  # the demo recipe's paths are relative to its folder
    assert main(["run", "recipe.yaml", f"out={tmp_path / 'o'}", "pretrain.overrides=[lora.rank=4]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pretrain:" in err and "lora.rank" in err


def test_missing_input_is_one_line_exit_2_and_writes_nothing(demo, tmp_path, capsys, monkeypatch):
    out, _ = demo
    monkeypatch.chdir(out)
    target = tmp_path / "o"
    code = main(["run", "recipe.yaml", f"out={target}", "tokenizer.input=[corpus/nope.txt]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "tokenizer.input[0] corpus/nope.txt: not found" in err
    assert not target.exists()
    assert main(["run", "recipe.yaml", "--from", "surgery"]) == 2
    assert "--from surgery: not a stage" in capsys.readouterr().err


def test_torchrun_trains_on_every_process_and_does_the_rest_once(demo, tmp_path):
    """`torchrun -m langgraft run`: pretrain and instruct train as 2-rank DDP (gloo) and evaluate on both ranks;
    export and report once."""
    out, _ = demo
    work = tmp_path / "dist"
    shutil.copytree(out, work)  # moved: its absolute paths change, so pretrain and instruct retrain here
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", port, "-m", "langgraft", "run",
                           "recipe.yaml", "--from", "pretrain"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("pretrain", "instruct"):
        summary = json.loads((work / stage / "train" / "manifest.json").read_text())["summary"]
        assert summary["world_size"] == 2 and len(set(summary["rank_checksums"])) == 1, stage
        assert (work / stage / "export" / "manifest.json").is_file()
        evaluation = json.loads((work / "eval" / stage / "manifest.json").read_text())
        assert evaluation["config"]["models"] == {stage: str(work / stage / "export" / "model")}
        assert evaluation["summary"]["ranks"] == 2  # both processes scored a share of the examples
    assert proc.stdout.count("[1/3] pretrain ...") == 1 and proc.stdout.count("summary.md (tables: ") == 1
    status = json.loads((work / "pipeline.json").read_text())["stages"]
    assert {s: v["status"] for s, v in status.items()} == {"pretrain": "ran", "instruct": "ran", "report": "ran"}
