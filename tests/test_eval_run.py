"""`langgraft eval` end to end on tiny random models: every shipped task, bad inputs, chance-level accuracy,
paired comparisons, --compare, contamination, and base vs `extend`ed copy English bits per character."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load_base_tokenizer, make_dataset, news_texts, save_tiny_model

from langgraft.cli import main
from langgraft.eval.tasks import shipped_tasks


@pytest.fixture(scope="module")
def models(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval-models")
    tok = load_base_tokenizer(data_dir, "llama2", tmp / "tok")
    return {seed: save_tiny_model("llama", tok, tmp / f"m{seed}", seed=seed, hidden=16, layers=1)
            for seed in (0, 1)}


def _results(out):
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_every_shipped_task_runs_and_bad_inputs_stay_local(models, tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: bad\nlang: en\nkind: choice\nmetrics: [acc]\nwrong_key: 1\ndata: {path: x}\n")
    (tmp_path / "holes.jsonl").write_text('{"s": "fine", "y": "1"}\n{"s": "no label"}\n')
    holes = tmp_path / "holes.yaml"
    holes.write_text(f"name: holes\nlang: en\nkind: choice\nmetrics: [acc]\nlabel: y\nchoices: [a, b]\n"
                     f"fields: {{s: s}}\nprompt: '{{s}}'\ndata: {{path: {tmp_path / 'holes.jsonl'}}}\n")
    empty = tmp_path / "empty.yaml"  # every label outside label_map: skipped records counted, task reported
    (tmp_path / "empty.jsonl").write_text('{"s": "fine", "y": "1"}\n')
    empty.write_text(holes.read_text().replace("name: holes", "name: empty").replace("holes.jsonl", "empty.jsonl")
                     + "label_map: {'7': 0}\n")
    out = tmp_path / "out"
    code = main(["eval", "--model", f"tiny={models[0]}", f"broken={tmp_path / 'nope'}", "--tasks", "all",
                 str(bad_yaml), str(holes), str(empty), "--limit", "3", "--max-new-tokens", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.yaml: unknown key wrong_key" in err
    assert f"task holes: {tmp_path / 'holes.jsonl'}: record 2: missing field 'y'" in err
    assert "model broken: cannot load model" in err and "no such local directory" in err
    assert "task empty: no examples in" in err and "label '1' not in label_map" in err
    doc = _results(out)
    assert len(doc["errors"]) == 4
    assert set(doc["results"]["tiny"]) == set(shipped_tasks())
    for task, res in doc["results"]["tiny"].items():
        for metric in doc["tasks"][task]["metrics"]:
            r = res[metric]
            assert r["n"] == 3 and r["value"] == r["value"] and r["ci"][0] <= r["value"] <= r["ci"][1], (task, metric)
        rows = (out / "samples" / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(rows) == 3 and json.loads(rows[0])["model"] == "tiny"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## fa_core" in report and "## en_core" in report and "| parsinlu_mc_ml | acc ↑ | 3 | 25.0 |" in report
    for png in ("fa_core", "en_core", "fa_vs_en"):
        assert (out / "charts" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_classification_sits_at_chance(models, tmp_path):
    """A random model's predictions do not depend on the label, so its expected accuracy lies between the
    smallest and the largest class share; scoring that leaked the label would land far above."""
    out = tmp_path / "chance"
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", "sst2,rte,parsinlu_qqp,parsinlu_mc_ck",
                 "--limit", "80", "--out", str(out)]) == 0
    doc = _results(out)
    for task, res in doc["results"]["tiny"].items():
        shares = doc["tasks"][task]["class_freq"].values()
        for metric in ("acc", "acc_norm"):
            lo, hi = res[metric]["ci"]
            assert lo <= max(shares) and hi >= min(shares), (task, metric, res[metric], shares)


def test_paired_comparison_and_compare_merge(models, tmp_path):
    tasks = ["--tasks", "sst2,bpc_en", "--limit", "30"]
    both, a, b = tmp_path / "both", tmp_path / "a", tmp_path / "b"
    assert main(["eval", "--model", f"s0={models[0]}", f"s1={models[1]}", *tasks, "--out", str(both)]) == 0
    assert main(["eval", "--model", f"s0={models[0]}", *tasks, "--out", str(a)]) == 0
    assert main(["eval", "--model", f"s1={models[1]}", *tasks, "--out", str(b)]) == 0
    merged = tmp_path / "merged"
    assert main(["eval", "--compare", str(a), str(b), "--out", str(merged)]) == 0
    joint, comp = _results(both), _results(merged)
    assert joint["results"] == comp["results"]
    assert joint["comparisons"] == comp["comparisons"]
    bpc = {c["metric"]: c for c in joint["comparisons"] if c["task"] == "bpc_en"}["bpc"]
    delta = joint["results"]["s1"]["bpc_en"]["bpc"]["value"] - joint["results"]["s0"]["bpc_en"]["bpc"]["value"]
    assert bpc["model"] == "s1" and bpc["baseline"] == "s0" and abs(bpc["delta"] - delta) < 1e-12
    assert bpc["ci"][0] <= bpc["delta"] <= bpc["ci"][1]
    report = (merged / "report.md").read_text(encoding="utf-8")
    assert "| s0 | s1 |" in report and report.count("**") >= 2
    twice = tmp_path / "twice"  # a name clash keeps both, the second as NAME@folder; identical -> no difference
    assert main(["eval", "--compare", str(a), str(a), "--out", str(twice)]) == 0
    doc = _results(twice)
    assert list(doc["models"]) == ["s0", "s0@a"]
    assert all(c["delta"] == 0 and not c["significant"] for c in doc["comparisons"])
    assert main(["eval", "--compare", str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # not an eval output


def test_contamination_warning(models, tmp_path, data_dir, capsys):
    lines = (data_dir / "sst2/data/stsa.binary.dev").read_text(encoding="utf-8").splitlines()
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": "Some context. " + line[2:].upper() + " more."}) + "\n"
                             for line in lines[1:3]))
    out = tmp_path / "out"
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", "sst2", "--limit", "5", "--shots", "2",
                 "--contamination", str(train), "--out", str(out)]) == 0
    assert "task sst2: 2 of 5 examples share ≥ 20% of their word 8-grams" in capsys.readouterr().err
    assert _results(out)["tasks"]["sst2"]["contaminated"] == [1, 2]
    rows = [json.loads(x) for x in (out / "samples" / "sst2.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["prompt"].count("Sentiment:") == 3 for r in rows)  # --shots 2: two solved examples first
    # a `data prepare` dataset: the train split counts, the validation split does not
    prepared = make_dataset(tmp_path / "prep", "en_mono", [lines[4][2:]], [lines[3][2:]], lang="en")
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", "sst2", "--limit", "5",
                 "--contamination", str(prepared.parent), "--out", str(tmp_path / "out2")]) == 0
    assert _results(tmp_path / "out2")["tasks"]["sst2"]["contaminated"] == [4]


def test_extended_copy_keeps_english_bits_per_character(tmp_path, data_dir):
    """The whole vocabulary pipeline (tokenizer train -> tokenizer extend -> extend, no training): English
    tokenizes identically, so English bpc moves only by the probability mass the new (and padding) head rows take
    from the old tokens: within 2%."""
    from transformers import AutoTokenizer

    from langgraft.tokenizer.bases import load_base

    corpus = tmp_path / "fa.txt"
    corpus.write_text("\n".join(news_texts(data_dir, fields=("abstract",))) + "\n", encoding="utf-8")
    llama2 = data_dir / "tokenizers/llama2/tokenizer.model"
    base = save_tiny_model("llama", load_base(llama2).hf, tmp_path / "base", seed=0, hidden=16, layers=1)
    for argv in (["tokenizer", "train", "--input", str(corpus), "--lang", "fa", "--vocab-size", "1200",
                  "--out", str(tmp_path / "sp")],
                 ["tokenizer", "extend", "--base", str(llama2), "--add", str(tmp_path / "sp"), "--lang", "fa",
                  "--out", str(tmp_path / "tok")],
                 ["extend", "--model", str(base), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "ext")]):
        assert main(argv) == 0, argv
    out = tmp_path / "out"
    assert main(["eval", "--model", f"base={base}", f"extended={tmp_path / 'ext'}", "--tasks", "bpc_en",
                 "--limit", "40", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "samples" / "bpc_en.jsonl").read_text(encoding="utf-8").splitlines()]
    tokens = {m: [r["tokens"] for r in rows if r["model"] == m] for m in ("base", "extended")}
    assert tokens["base"] == tokens["extended"]  # English tokenized identically
    assert len(AutoTokenizer.from_pretrained(tmp_path / "ext")) > len(AutoTokenizer.from_pretrained(base))
    res = _results(out)["results"]
    before, after = res["base"]["bpc_en"]["bpc"]["value"], res["extended"]["bpc_en"]["bpc"]["value"]
    print(f"English bpc: base {before:.4f}, extended {after:.4f}, change {100 * (after / before - 1):+.3f}%")
    assert after >= before  # new rows can only take probability mass away from English tokens
    assert abs(after / before - 1) < 0.02


def test_chat_template_prompts(models, tmp_path, data_dir, capsys):
    """--chat wraps each prompt as a user turn (BOS once); a tokenizer without a template is one error line."""
    from transformers import AutoTokenizer

    mistral = AutoTokenizer.from_pretrained(data_dir / "tokenizers/mistral-7b-v0.3")
    chat = save_tiny_model("llama", mistral, tmp_path / "chat", hidden=16, layers=1)
    out = tmp_path / "out"
    code = main(["eval", "--model", f"chat={chat}", f"plain={models[0]}", "--tasks", "sst2,self_instruct_user",
                 "--limit", "2", "--max-new-tokens", "2", "--chat", "--out", str(out)])
    assert code == 1 and "model plain: --chat: this model's tokenizer has no chat template" in capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "samples" / "sst2.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["model"] == "chat" for r in rows)
    assert rows[0]["prompt"].startswith("[INST] Review: ") and rows[0]["prompt"].endswith("Sentiment:[/INST]")
    assert mistral(rows[0]["prompt"]).input_ids.count(mistral.bos_token_id) == 1


def test_a_model_that_learned_the_task_scores_above_chance(tmp_path, data_dir):
    """Train a tiny model for a few seconds on SST-2 *train* (answer-token loss only), evaluate on SST-2 dev:
    accuracy must be clearly above the majority share. Catches reversed labels, misaligned choices and sign
    errors in scoring, which the chance-level test cannot see."""
    from transformers import AutoModelForCausalLM

    tok = load_base_tokenizer(data_dir, "llama2", tmp_path / "tok")
    tok.pad_token = tok.unk_token
    path = save_tiny_model("llama", tok, tmp_path / "m", seed=0, hidden=32, layers=1)
    model = AutoModelForCausalLM.from_pretrained(path)
    lines = (data_dir / "sst2/data/stsa.binary.train").read_text(encoding="utf-8").splitlines()
    answer = [tok("Sentiment:" + c).input_ids[-1] for c in (" negative", " positive")]  # as in sst2.yaml
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(150):
        batch = lines[step * 32: step * 32 + 32]
        enc = tok([f"Review: {line[2:]}\nSentiment:" for line in batch], return_tensors="pt", padding=True,
                  padding_side="left", truncation=True, max_length=64)
        logits = model(**enc, logits_to_keep=1).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([answer[int(line[0])] for line in batch]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(tmp_path / "trained")
    tok.save_pretrained(tmp_path / "trained")
    out = tmp_path / "out"
    assert main(["eval", "--model", f"trained={tmp_path / 'trained'}", "--tasks", "sst2", "--limit", "200",
                 "--out", str(out)]) == 0
    doc = _results(out)
    acc = doc["results"]["trained"]["sst2"]["acc"]
    assert acc["ci"][0] > max(doc["tasks"]["sst2"]["class_freq"].values()) + 0.1, acc


def test_glob_task_seeded_limit_and_own_ids_reach_the_samples(models, tmp_path, data_dir, capsys):
    from langgraft.eval.records import build_examples, read_records
    from langgraft.eval.run import select_examples
    from langgraft.eval.tasks import load_task

    lines = (data_dir / "sst2" / "data" / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()[:12]
    (tmp_path / "parts").mkdir()
    for k in range(2):
        (tmp_path / "parts" / f"part-{k}.jsonl").write_text("".join(
            json.dumps({"uid": f"sst2-dev-{i}", "s": line[2:], "y": line[0]}) + "\n"
            for i, line in enumerate(lines) if i % 2 == k))
    task = tmp_path / "globbed.yaml"
    task.write_text("name: globbed\nlang: en\nkind: choice\nmetrics: [acc]\nlabel: y\nchoices: [negative, positive]\n"
                    "fields: {s: s}\nprompt: '{s}'\nid_field: uid\n"
                    "data: {path: 'parts/part-*.jsonl'}\n")
    out = tmp_path / "out"
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", str(task), "--limit", "4", "--sample-seed", "5",
                 "--data-root", str(tmp_path), "--out", str(out)]) == 0
    spec = load_task(task)
    every, _ = build_examples(spec, *read_records(spec.data, tmp_path, spec.name))
    want = [ex.id for ex in select_examples(every, 4, 5, "globbed")]
    rows = [json.loads(line) for line in (out / "samples" / "globbed.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == want and all(i.startswith("sst2-dev-") for i in want)
    assert want != [ex.id for ex in every[:4]]
    inputs = json.loads((out / "manifest.json").read_text())["inputs"]
    assert sorted(inputs) == [str(tmp_path / "parts" / f"part-{k}.jsonl") for k in range(2)]
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", str(task), "--sample-seed", "5",
                 "--out", str(tmp_path / "o2")]) == 2
    assert "--sample-seed: needs --limit N" in capsys.readouterr().err


def _namnak_paragraphs(data_dir, n: int, min_words: int = 40) -> list[str]:
    """The first `n` paragraphs of real Persian news that share no word 8-gram with each other (the site repeats
    boilerplate paragraphs, which would blur the overlap each test example is given)."""
    from langgraft.lang.words import words

    seen: set = set()
    out = []
    paragraphs = news_texts(data_dir, "health/namnak-5.json", fields=("paragraphs",))
    for para in (p for p in paragraphs if len(p.split()) >= min_words):
        w = words(para)
        grams = {tuple(w[i: i + 8]) for i in range(len(w) - 7)}
        if not grams & seen:
            out.append(para)
            seen |= grams
        if len(out) == n:
            break
    return out


def _overlap_setup(tmp_path, data_dir):
    """Four real Persian paragraphs as a task; training text holding all of #0, the first 40% of #1's words, the
    first 12% of #2's and nothing of #3, each inside unrelated text."""
    from langgraft.lang.words import words

    paras, filler = _namnak_paragraphs(data_dir, 7)[:4], _namnak_paragraphs(data_dir, 7)[4:]
    (tmp_path / "paras.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paras))
    task = tmp_path / "paras.yaml"
    task.write_text("name: paras\nlang: fa\nkind: intrinsic\nmetrics: [bpc]\ntext: text\n"
                    "data: {path: paras.jsonl}\n")
    w = [words(p) for p in paras]
    cuts = [len(w[0]), int(0.4 * len(w[1])), int(0.12 * len(w[2]))]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"{filler[i]} {' '.join(w[i][:k])} {filler[-1 - i]}"}) + "\n"
                             for i, k in enumerate(cuts)))
    expected = [1.0] + [(k - 7) / (len(w[i]) - 7) for i, k in list(enumerate(cuts))[1:]]
    return task, train, expected


@pytest.mark.parametrize("threshold,flagged", [(0.2, [0, 1]), (0.05, [0, 1, 2]), (1.0, [0])])
def test_contamination_reports_partial_overlap_per_example(tmp_path, data_dir, threshold, flagged):
    from langgraft.eval.contamination import build_index
    from langgraft.eval.options import EvalOptions
    from langgraft.eval.run import prepare_tasks

    task, train, expected = _overlap_setup(tmp_path, data_dir)
    errors: list[str] = []
    [prepared] = prepare_tasks([str(task)], tmp_path, EvalOptions(contamination_threshold=threshold),
                               build_index([str(train)]), errors)
    assert not errors and prepared.contaminated == flagged  # 1.0: only whole copies, as the old check did
    assert set(prepared.overlap) == {0, 1, 2}  # #3 shares nothing
    for i, share in enumerate(expected):
        assert prepared.overlap[i] == pytest.approx(share, abs=0.02), i
    assert 0.2 < prepared.overlap[1] < 1 and 0 < prepared.overlap[2] < 0.2


def test_contamination_overlap_reaches_results_and_report(models, tmp_path, data_dir, capsys):
    task, train, _ = _overlap_setup(tmp_path, data_dir)
    out = tmp_path / "out"
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", str(task), "--data-root", str(tmp_path),
                 "--contamination", str(train), "--out", str(out)]) == 0
    assert "task paras: 2 of 4 examples share ≥ 20% of their word 8-grams" in capsys.readouterr().err
    meta = _results(out)["tasks"]["paras"]
    assert meta["contaminated"] == [0, 1] and meta["contamination"]["threshold"] == 0.2
    assert sorted(meta["contamination"]["overlap"]) == ["0", "1", "2"]
    assert "- paras: 2 examples share ≥ 20% of their word 8-grams" in (out / "report.md").read_text("utf-8")
    assert main(["eval", "--model", f"tiny={models[0]}", "--tasks", str(task), "--data-root", str(tmp_path),
                 "--contamination", str(train), "--contamination-threshold", "0", "--out", str(tmp_path / "o")]) == 2
