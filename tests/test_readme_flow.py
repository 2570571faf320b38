"""README's verb-by-verb flow, run top to bottom as written, on small real data and a tiny model.

The commands are read from README.md itself, so the README cannot drift from what runs. Only sizes change, each
substitution named below and each required to match (a README edit that drops one fails here): the data recipe
is a small one with the same dataset names, the 7B hub model is a tiny random Llama with the Llama-2 tokenizer,
training stops after two steps, evaluation runs two tasks of each suite on two examples each. `[...]` marks optional flags; they are
left out.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import time
from pathlib import Path

import yaml

from langgraft.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SIZES = ["max_steps=2", "data.block_size=128", "micro_batch_size=2", "grad_accum=1", "eval_batches=1",
               "data.max_texts=40", "checkpoint_every=0", "eval_every=0", "log_every=1"]


def readme_commands() -> list[list[str]]:
    """The `langgraft ...` commands of README's "Or verb by verb" block, continuation lines joined, comments and
    `[optional]` flags dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"Or verb by verb:\s*```bash\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words, depth = [], 0
        for word in shlex.split(line, comments=True):
            depth += word.count("[") if word.startswith("[") else 0
            if depth == 0:
                words.append(word)
            depth -= len(word) - len(word.rstrip("]")) if depth else 0
        if words:
            assert words[0] == "langgraft", line
            commands.append(words[1:])
    return commands


def _data_recipe(tmp: Path, data_dir: Path) -> Path:
    """recipes/data/persian.yaml's dataset names on a few hundred records of the same sources."""
    recipe = yaml.safe_load((ROOT / "recipes/data/persian.yaml").read_text(encoding="utf-8"))
    keep = {"fa_mono": 40, "en_fa_quran": 100, "instructions": 20}  # records per source file
    datasets = []
    for ds in recipe["datasets"]:
        if ds["name"] in keep:
            sources = ds["sources"][:2 if ds["kind"] == "instructions" else 1]
            ds["sources"] = [{**src, "path": src["path"].replace("*", "1"), "limit": keep[ds["name"]]}
                             for src in sources]
            ds["validation_fraction"] = 0.2
            datasets.append(ds)
    recipe.update(root=str(data_dir), workers=1, datasets=datasets, leak_guard={})
    path = tmp / "persian-small.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def _tiny_llama2(tmp: Path, data_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from langgraft.tokenizer.bases import load_base
    from helpers import tiny_config

    tokenizer = load_base(data_dir / "tokenizers/llama2/tokenizer.model").hf
    torch.manual_seed(0)
    out = tmp / "tiny-llama2"
    AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer), hidden=16, layers=1)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _sized(argv: list[str], subs: dict[str, str], used: set[str]) -> list[str]:
    out = []
    for word in argv:
        for old, new in subs.items():
            if old in word:
                word = word.replace(old, new)
                used.add(old)
        if out and out[-1] == "--vocab-size":
            word, _ = "800", used.add("--vocab-size")
        out.append(word)
    if out[0] == "train":  # KEY=VALUE overrides go before the flags that follow them
        at = out.index("--out")
        out[at:at] = TRAIN_SIZES
    if out[0] == "generate":
        out += ["--max-new-tokens", "4"]
    if out[0] == "eval" and "--model" in out:
        out += ["--limit", "2", "--max-new-tokens", "4"]
    return out


def test_readme_verb_by_verb_flow_runs_as_written(tmp_path, data_dir, monkeypatch, capsys):
    commands = readme_commands()
    verbs = [" ".join(c[:2]) if c[0] in ("data", "tokenizer") else c[0] for c in commands]
    for verb in ("data prepare", "tokenizer train", "tokenizer extend", "tokenizer report", "extend", "train",
                 "export", "chat", "eval"):
        assert verb in verbs, verb
    subs = {"recipes/data/persian.yaml": str(_data_recipe(tmp_path, data_dir)),
            "meta-llama/Llama-2-7b-hf": str(_tiny_llama2(tmp_path, data_dir)),
            "../shared/data": str(data_dir), "recipes/train/": f"{ROOT}/recipes/train/",
            "fa_core,en_core": "bpc_fa,parsinlu_sentiment_food,bpc_en,sst2"}  # two tasks per suite
    used: set[str] = set()
    timings: list = []
    monkeypatch.chdir(tmp_path)
    # files the README leaves to the user: prompts for `generate`
    prompts = ["سلام، حالت چطور است؟", "Name three colours."]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n"
                                                    for p in prompts), encoding="utf-8")
    for argv in commands:
        argv = _sized(argv, subs, used)
        monkeypatch.setattr(sys, "stdin", io.StringIO("سلام\n"))
        started = time.perf_counter()
        try:
            status = main(argv)
        except SystemExit as exc:  # an argparse action that prints and exits (e.g. a listing)
            status = exc.code or 0
        printed = capsys.readouterr()
        timings.append((round(time.perf_counter() - started, 1), argv[:2]))
        assert status == 0, (timings, argv, printed.out[-2000:], printed.err[-2000:])
    print(timings)
    assert used == {*subs, "--vocab-size"}, used

    runs = tmp_path / "runs"
    report = json.loads((runs / "tok-report/report.json").read_text(encoding="utf-8"))
    validation = json.loads((runs / "data/fa_mono/dataset.json").read_text(encoding="utf-8"))["splits"]["validation"]
    assert report["texts"]["fa"]["lines"] == validation["records"] > 0
    fa = report["results"]["fa"]
    assert fa["extended"]["fertility"] < fa["llama2"]["fertility"]
    assert json.loads((runs / "fa-sp/train_report.json").read_text())["files"]  # trained from the dataset
    merged = json.loads((runs / "eval-all/results.json").read_text(encoding="utf-8"))
    assert list(merged["models"]) == ["base", "aligned", "pretrain", "instruct"]
    for run in ("align", "pretrain", "instruct"):
        assert (runs / f"{run}-export/model/config.json").is_file()


def test_readme_install_takes_the_pinned_torch_from_the_cpu_index():
    """README's CPU install line names exactly the torch version constraints.txt pins (the CPU build satisfies it),
    and README and CI install through the constraints file."""
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(encoding="utf-8"), re.M).group(1)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"pip install torch=={pin} --index-url https://download.pytorch.org/whl/cpu" in readme
    assert 'pip install -c constraints.txt -e ".[test]" --extra-index-url https://download.pytorch.org/whl/cpu' in readme
    install = 'pip install -c constraints.txt -e ".[test]"'
    assert install in readme.split("## Install")[1].split("```")[1]
    assert 'pip install --quiet -c constraints.txt -e ".[test]"' in (ROOT / ".ci/run").read_text()
