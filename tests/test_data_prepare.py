"""`langgraft data prepare` end to end on small inputs built from the real shared data (in tmp_path)."""

from __future__ import annotations

import csv
import re
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from langgraft.config import load_config
from langgraft.data.config import PrepareConfig
from langgraft.data.load import dataset_info, iter_texts, load_records
from langgraft.data.prepare import prepare
from langgraft.errors import UserError
from helpers import english_lines, news_articles, persian_lines

# Written for this test (not from any dataset): Modern Standard Arabic, same script as Persian.
ARABIC = ("ذهب الطالب إلى المكتبة صباحاً ليقرأ كتاباً عن تاريخ العلوم في العصر العباسي، ثم عاد إلى البيت "
          "لأن الجو كان بارداً جداً وكانت الأمطار تتساقط بغزارة على المدينة طوال اليوم.")
ENGLISH = "The committee will publish its final report next week, after the hearings in the capital have ended."


def _farstail_premise(data_dir: Path) -> str:
    with (data_dir / "farstail/data/Val-word.csv").open(encoding="utf-8") as fh:
        return next(csv.DictReader(fh, delimiter="\t"))["premise"]


def _mono_inputs(tmp: Path, data_dir: Path) -> dict:
    """news.jsonl: 6 real articles + an exact repost + a near repost + Arabic + English + a leaked eval premise."""
    arts = news_articles(data_dir, n=6)
    docs = [{"title": a["title"], "paragraphs": a["paragraphs"]} for a in arts]
    docs.append(dict(docs[0]))  # exact duplicate
    near = dict(docs[1])
    near["paragraphs"] = list(near["paragraphs"]) + ["این خبر به‌روزرسانی شد."]  # a repost with one line added
    docs.append(near)
    docs.append({"title": "خبر", "paragraphs": [ARABIC, ARABIC.replace("الطالب", "المعلم")]})
    docs.append({"title": "news", "paragraphs": [ENGLISH, ENGLISH.replace("committee", "council")]})
    docs.append({"title": "گزارش", "paragraphs": [arts[2]["paragraphs"][0], _farstail_premise(data_dir)]})
    path = tmp / "news.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return {"docs": docs, "path": path}


def _config(tmp: Path, data_dir: Path, **extra) -> dict:
    cfg = {
        "root": str(tmp), "workers": 1, "preview_records": 2,
        "datasets": [{
            "name": "news", "kind": "monolingual", "lang": "fa", "validation_fraction": 0.0,
            "filters": {"min_chars": 20, "langid_candidates": ["fa", "ar", "ur", "en"]},
            "dedup": {"threshold": 0.7},
            "sources": [{"path": "news.jsonl", "text": ["title", "paragraphs"]}],
        }],
        "leak_guard": {"eval_sets": [{"name": "farstail", "source": {
            "path": str(data_dir / "farstail/data/Val-word.csv"), "reader": "tsv"}, "fields": ["premise"]}]},
    }
    cfg.update(extra)
    return cfg


def _write(tmp: Path, cfg: dict) -> Path:
    path = tmp / "data.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_monolingual_filters_dedups_guards_and_publishes(tmp_path, data_dir):
    inputs = _mono_inputs(tmp_path, data_dir)
    out = tmp_path / "out"
    manifest = prepare(load_config(PrepareConfig, _write(tmp_path, _config(tmp_path, data_dir))), out,
                       progress=False)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    ds = stats["datasets"]["news"]
    assert ds["read"] == len(inputs["docs"]) == 11
    assert ds["read"] == ds["kept_after_filters"] + sum(ds["dropped"].values())  # nothing dropped silently
    assert ds["dropped"] == {"langid_ar": 1, "wrong_script": 1, "eval_leak": 1}  # Arabic is not taken for Persian
    assert {r: [x.rsplit(":", 1)[1] for x in v] for r, v in ds["drop_examples"].items()} == {
        "langid_ar": ["9"], "wrong_script": ["10"], "eval_leak": ["11"]}
    assert ds["exact_duplicates"] == 1 and ds["near_duplicates"] == 1
    assert ds["documents"] == 6 == ds["splits"]["train"]["records"]
    assert manifest.summary["leak_guard"]["overlap_after"] == 0
    # the layout `langgraft train` reads: dataset.json, parquet shards with `text` and `lang`, loading helpers
    info = dataset_info(out / "news")
    assert info["kind"] == "monolingual" and set(info["splits"]) == {"train", "validation"}
    rows = load_records(out / "news", "train")
    assert {r["lang"] for r in rows} == {"fa"} and len(rows) == 6 and not load_records(out / "news", "validation")
    assert list(iter_texts(out / "news", "train")) == [r["text"] for r in load_records(out / "news", "train")]
    texts = "\n".join(r["text"] for r in rows)
    assert "المعلم" not in texts and "committee" not in texts and _farstail_premise(data_dir) not in texts
    assert (out / "preview.md").read_text(encoding="utf-8").startswith("# Preview")
    assert not (tmp_path / ".out.work").exists()  # the work folder goes once the output is published


def test_split_is_by_content_and_stable_when_files_are_added(tmp_path, data_dir):
    inputs = _mono_inputs(tmp_path, data_dir)
    cfg = _config(tmp_path, data_dir, leak_guard={})
    cfg["datasets"][0].update(dedup={"exact": True, "near": False}, validation_fraction=0.5)
    prepare(load_config(PrepareConfig, _write(tmp_path, cfg)), tmp_path / "a", progress=False)
    extra = tmp_path / "more.jsonl"
    extra.write_text("".join(json.dumps({"title": a["title"], "paragraphs": a["paragraphs"]}, ensure_ascii=False)
                             + "\n" for a in news_articles(data_dir, n=12)[6:]), encoding="utf-8")
    cfg["datasets"][0]["sources"].insert(0, {"path": "more.jsonl", "text": ["title", "paragraphs"]})
    prepare(load_config(PrepareConfig, _write(tmp_path, cfg)), tmp_path / "b", progress=False)
    before = {split: set(iter_texts(tmp_path / "a/news", split)) for split in ("train", "validation")}
    after = {split: set(iter_texts(tmp_path / "b/news", split)) for split in ("train", "validation")}
    assert before["validation"] and before["validation"] <= after["validation"]
    assert before["train"] <= after["train"]
    assert len(inputs["docs"]) == 11


def test_bilingual_formats_and_instructions(tmp_path, data_dir):
    en, fa = english_lines(data_dir, 30), persian_lines(data_dir, 30)
    en[3] = fa[3]  # identical sides
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "fa.txt").write_text("\n".join(fa) + "\n", encoding="utf-8")
    pair = {"kind": "bilingual", "validation_fraction": 0.0, "filters": {"min_chars": 2, "langid": False},
            "dedup": {"near": False}, "sources": [{"path": "en.txt", "path2": "fa.txt", "license": "CC0-1.0"}]}
    inst = {"name": "inst", "kind": "instructions", "lang": "fa", "validation_fraction": 0.0,
            "filters": {"min_chars": 5, "min_words": 1, "min_script_ratio": 0.3},
            "sources": [{"path": str(data_dir / "persian_instruct/persian_seed_tasks.jsonl"), "records": "instances",
                         "limit": 40},
                        {"path": str(data_dir / "self_instruct/data/seed_tasks.jsonl"), "records": "instances",
                         "lang": "en", "limit": 10}]}
    cfg = {"root": str(tmp_path), "workers": 1, "datasets": [
        {**pair, "name": "both", "format": "both"}, {**pair, "name": "translate", "format": "translate"},
        {**pair, "name": "inter", "format": "interleave", "interleave_group": 4}, inst]}
    out = tmp_path / "out"
    prepare(load_config(PrepareConfig, _write(tmp_path, cfg)), out, progress=False)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["datasets"]
    assert stats["both"]["dropped"].get("identical_sides") == 1
    kept = stats["both"]["documents"]
    both = load_records(out / "both", "train")
    assert len(both) == 2 * kept
    assert {(r["src_lang"], r["tgt_lang"]) for r in both} == {("en", "fa"), ("fa", "en")}
    first = next(r for r in both if r["src_lang"] == "en")
    assert first["text"] == f"{first['src']}\n{first['tgt']}" and first["lang"] == "en-fa"
    assert dataset_info(out / "translate")["format"] == "translate"
    assert all(r["text"].startswith("Translate from ") for r in load_records(out / "translate", "train"))
    inter = load_records(out / "inter", "train")
    assert len(inter) == -(-kept // 4) and inter[0]["text"].count("\n") == 7
    rows = load_records(out / "inst", "train")
    assert {r["lang"] for r in rows} == {"fa", "en"}
    assert all(r["instruction"] in r["text"] and r["output"] in r["text"] for r in rows)
    assert stats["inst"]["sources"][1]["read"] == 10
    # licences: declared on the source, else the shared data's MANIFEST.tsv row of each file
    assert [s["license"] for s in stats["inst"]["sources"]] == ["unknown (no license file in repo)", "Apache-2.0"]
    assert dataset_info(out / "inst")["licenses"] == ["Apache-2.0", "unknown (no license file in repo)"]
    assert dataset_info(out / "both")["licenses"] == ["CC0-1.0"]


def _expect_error(tmp_path: Path, cfg: dict, match: str, out: str = "out") -> None:
    with pytest.raises(UserError, match=match):
        prepare(load_config(PrepareConfig, _write(tmp_path, cfg)), tmp_path / out, progress=False)
    assert not (tmp_path / out).exists()  # no partial output


def test_bad_input_is_named_and_leaves_no_output(tmp_path, data_dir):
    base = _config(tmp_path, data_dir, leak_guard={})
    src = base["datasets"][0]["sources"][0]
    good = json.dumps({"title": "عنوان خبر", "paragraphs": ["متن کوتاه خبر برای آزمون."]}, ensure_ascii=False)
    (tmp_path / "news.jsonl").write_bytes((good + "\n").encode() * 3 + b'{"title": "\xff\xfe"}\n')
    _expect_error(tmp_path, base, r"news\.jsonl:4: not valid UTF-8 \(byte 0x[0-9a-f]{2} at byte 2\d\d of the file\)")
    (tmp_path / "news.jsonl").write_text(good + "\n{broken\n" + good + "\n[1, 2\n", encoding="utf-8")
    _expect_error(tmp_path, {**base, "strict": True}, r"news\.jsonl:2: not valid JSON")
    prepare(load_config(PrepareConfig, _write(tmp_path, base)), tmp_path / "lenient", progress=False)
    broken = json.loads((tmp_path / "lenient/stats.json").read_text())["datasets"]["news"]["broken_json"]
    assert broken["count"] == 2 and [x.rsplit(":", 1)[1] for x in broken["first_lines"]] == ["2", "4"]
    (tmp_path / "news.jsonl").write_text(json.dumps({"title": "x", "body": []}) + "\n", encoding="utf-8")
    _expect_error(tmp_path, base, r"news\.jsonl:1: missing field 'paragraphs' \(present: body, title\)")
    (tmp_path / "news.jsonl").write_text("", encoding="utf-8")
    _expect_error(tmp_path, base, r"news\.jsonl: empty file")
    src["path"] = "nothing-*.jsonl"
    _expect_error(tmp_path, base, r"sources\[0\]\.path: no files match")
    (tmp_path / "a.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("یک\n", encoding="utf-8")
    pairs = {"root": str(tmp_path), "datasets": [{"name": "p", "kind": "bilingual",
                                                  "sources": [{"path": "a.txt", "path2": "b.txt"}]}]}
    _expect_error(tmp_path, pairs, r"parallel files differ in length: .*a\.txt has 2 lines, .*b\.txt has 1")


def test_cli_error_is_one_line(tmp_path, data_dir, capsys):
    from langgraft.cli import main

    cfg = _config(tmp_path, data_dir)
    cfg["datasets"][0]["filters"]["min_charz"] = 3
    code = main(["data", "prepare", "--config", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "datasets[0].filters.min_charz" in err.replace("unknown key ", "")


def test_interrupted_run_resumes_from_finished_tasks(tmp_path, data_dir):
    """Kill a run after its first task finished; the rerun (two worker processes this time) reuses it."""
    _mono_inputs(tmp_path, data_dir)
    cfg = _config(tmp_path, data_dir, workers=1)
    cfg["datasets"][0]["sources"].append({"path": str(data_dir / "parsinlu/data/translation/quran/fa.[ab]*.norm.txt"),
                                          "limit": 300})  # ansarian, ayati, bahrampour: 1 + 3 tasks
    path = _write(tmp_path, cfg)
    out, wd = tmp_path / "out", tmp_path / ".out.work" / "news"
    proc = subprocess.Popen([sys.executable, "-m", "langgraft", "data", "prepare", "--config", str(path),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done = wd / "logs" / "A-clean" / "completions"
    deadline = time.time() + 120
    while time.time() < deadline and not (done.is_dir() and len(list(done.iterdir())) >= 1):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in done.iterdir())
    assert finished and not out.exists()
    stamps = {name: (wd / "clean" / f"{name}.jsonl").stat().st_mtime_ns for name in finished}
    prepare(load_config(PrepareConfig, path, ["workers=2"]), out, progress=False, keep_work=True)
    assert json.loads((out / "stats.json").read_text())["datasets"]["news"]["read"] == 11 + 300 * 3
    assert {name: (wd / "clean" / f"{name}.jsonl").stat().st_mtime_ns for name in finished} == stamps
    assert len(list(done.iterdir())) == 4


def test_stages_run_on_another_executor_then_prepare_only_publishes(tmp_path, data_dir):
    """The docs/DATA.md cluster recipe, with datatrove's LocalPipelineExecutor standing in for Slurm/Ray."""
    from datatrove.executor import LocalPipelineExecutor

    from langgraft.data.prepare import cluster_stages

    _mono_inputs(tmp_path, data_dir)
    cfg = load_config(PrepareConfig, _write(tmp_path, _config(tmp_path, data_dir)))
    stages = cluster_stages(cfg, tmp_path / "out")
    assert [s[1] for s in stages] == ["A-clean", "B-find", "C-exact", "D-buckets", "E-cluster", "F-write"]
    for _, _, pipeline, tasks, logging_dir in stages:
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(logging_dir)).run()
    wd = tmp_path / ".out.work/news"
    written = {p: p.stat().st_mtime_ns for p in wd.rglob("*") if p.suffix in (".jsonl", ".parquet", ".sig")}
    manifest = prepare(cfg, tmp_path / "out", progress=False, keep_work=True)
    assert manifest.summary["documents"] == 6 and manifest.summary["near_duplicates"] == 1
    # every task was finished on the "cluster": the local run found the completion markers and rewrote nothing
    assert written and {p: p.stat().st_mtime_ns for p in written} == written


def _seed_conversations(data_dir: Path, n: int) -> list[dict]:
    """ShareGPT-style two-exchange chats from the Persian seed tasks: one task's instruction, two instances."""
    chats = []
    for line in (data_dir / "persian_instruct/persian_seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()[:n]:
        inst = json.loads(line)["instances"]
        if len(inst) < 2:
            inst = inst * 2
        turns = [{"from": "system", "value": "به فارسی پاسخ بده."}]
        for x in inst[:2]:
            turns += [{"from": "human", "value": f"{x['instruction']}\n{x['input']}".strip()},
                      {"from": "gpt", "value": x["output"]}]
        chats.append({"conversations": turns})
    return chats


def test_conversations_keep_every_turn(tmp_path, data_dir):
    chats = _seed_conversations(data_dir, 12) + [{"conversations": [{"from": "gpt", "value": "سلام، چطور کمک کنم؟"}]}]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in chats) + "\n",
                                         encoding="utf-8")
    cfg = {"root": str(tmp_path), "workers": 1, "datasets": [{
        "name": "chat", "kind": "instructions", "lang": "fa", "validation_fraction": 0.0,
        "filters": {"min_chars": 5, "min_words": 1, "min_script_ratio": 0.3, "langid": False},
        "dedup": {"near": False},
        "sources": [{"path": "chat.jsonl", "messages": "conversations", "role": "from", "content": "value"}]}],
        # an evaluation text that is the *second* reply of the first chat: the guard reads every turn
        "leak_guard": {"min_chars": 20, "eval_sets": [{"name": "held", "source": {"path": "held.jsonl"}}]}}
    (tmp_path / "held.jsonl").write_text(json.dumps({"text": chats[0]["conversations"][4]["value"]},
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    manifest = prepare(load_config(PrepareConfig, _write(tmp_path, cfg)), tmp_path / "out", progress=False)
    stats = json.loads((tmp_path / "out/stats.json").read_text(encoding="utf-8"))["datasets"]["chat"]
    assert stats["dropped"] == {"no_user_then_assistant_turn": 1, "eval_leak": 1}
    assert manifest.summary["leak_guard"]["overlap_after"] == 0
    rows = load_records(tmp_path / "out" / "chat", "train")
    assert len(rows) + stats["exact_duplicates"] == 11
    for row in rows:
        roles = [t["role"] for t in row["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        # the first exchange is also the row's instruction/output; the text holds every turn
        assert row["instruction"] == row["messages"][1]["content"] and row["output"] == row["messages"][2]["content"]
        assert all(t["content"] in row["text"] for t in row["messages"])
    (tmp_path / "chat.jsonl").write_text(json.dumps({"conversations": [{"from": "narrator", "value": "x"}]}) + "\n",
                                         encoding="utf-8")
    _expect_error(tmp_path, cfg, r"chat\.jsonl:1: conversations\[0\]\.from 'narrator' is not one of user, human",
                  out="bad")


def test_one_progress_bar_per_phase(tmp_path, data_dir, capfd):
    """Reading shows input bytes; every later phase (dedup, writing) gets its own bar over its tasks, so no bar sits
    at "100%, ETA 00:00" while deduplication and writing still run. The bars also reach langgraft.log."""
    from langgraft.cli import main
    from langgraft.consolelog import LOG, terminal_text

    _mono_inputs(tmp_path, data_dir)
    out = tmp_path / "out"
    assert main(["data", "prepare", "--config", str(_write(tmp_path, _config(tmp_path, data_dir, leak_guard={}))),
                 "--out", str(out)]) == 0
    shown = terminal_text(capfd.readouterr().err).splitlines()
    bars = {line.split(":")[0]: line for line in shown if line.startswith("news ")}
    assert list(bars) == ["news A-clean", "news B-find", "news C-exact", "news D-buckets", "news E-cluster",
                          "news F-write"], shown
    assert "100%" in bars["news A-clean"] and "B/s" in bars["news A-clean"]
    for phase, line in list(bars.items())[1:]:
        done = re.search(r"\| (\d+)/(\d+) \[", line)
        assert "100%" in line and "task" in line and done and done[1] == done[2], line
    log = (out / LOG).read_text(encoding="utf-8")
    assert all(line in log for line in bars.values())


def _lsh_error_by_brute_force(threshold: float, bands: int, rows: int) -> float:
    """The same error with a plain 20,001-point trapezoid rule: an independent check of the quadrature."""
    import numpy as np

    s = np.linspace(0.0, 1.0, 20001)
    curve = 1 - (1 - s ** rows) ** bands
    below = s <= threshold
    return 0.5 * np.trapezoid(curve[below], s[below]) + 0.5 * np.trapezoid(1 - curve[~below], s[~below])


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 16), (0.8, 112), (0.7, 64), (0.9, 128), (0.3, 40)])
def test_lsh_params_minimise_the_banding_error(threshold, num_perm):
    from langgraft.data.engine import lsh_params

    bands, rows = lsh_params(threshold, num_perm)
    assert bands >= 1 and rows >= 1 and bands * rows <= num_perm
    chosen = _lsh_error_by_brute_force(threshold, bands, rows)
    others = [_lsh_error_by_brute_force(threshold, b, r) for b in range(1, num_perm + 1)
              for r in range(1, num_perm // b + 1) if (b, r) != (bands, rows)]
    assert chosen <= min(others) + 1e-6  # no other split of the permutations does better
    # the S-curve's steepest point (1/b)^(1/r) sits near the threshold it was tuned for
    assert abs((1 / bands) ** (1 / rows) - threshold) < 0.15
