"""The leak guard reads what it protects from the evaluation tasks themselves: no shipped recipe (nor the demo's,
nor a shipped data config run on its own) trains on a record any shipped task, or a recipe's own task, evaluates.

Task texts are read here through the evaluation's own reader (`read_records` + `build_examples`), not through the
guard's code, and compared with every published train row (each text and each line, normalised)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from langgraft.config import load_config, to_dict
from langgraft.data.config import PrepareConfig
from langgraft.data.leaks import guarded_tasks
from langgraft.data.load import iter_records
from langgraft.data.prepare import LEAK_COLUMNS, prepare
from langgraft.eval.records import build_examples, read_records
from langgraft.eval.tasks import load_task, resolve_tasks
from langgraft.lang import get_language
from langgraft.pipeline.recipe import load_recipe, task_items
from langgraft.pipeline.table import Recipe
from langgraft.pipeline.stages import data_config
from helpers import english_lines, news_articles

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 25  # records read per source file: every file (so every evaluated one) is visited, quickly


def pipeline_recipes() -> list[Path]:
    """Every shipped `langgraft run` recipe: a YAML under recipes/ whose keys are a Recipe's (it has `out`)."""
    keys = set(Recipe.__dataclass_fields__)
    found = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if "out" in raw and set(raw) <= keys:
            found.append(path)
    return found


def _task_index(tasks: list[Path], root: Path, min_chars: int) -> dict[str, str]:
    """Normalised text/line -> task name, for every text the evaluation builds from the tasks' data."""
    index: dict[str, str] = {}
    for path in tasks:
        spec = load_task(path)
        if not all((root / rel).is_file() for rel in ([spec.data.path] if spec.data.path else
                                                       spec.data.files.values())):
            continue  # a data folder without this benchmark (the demo corpus)
        lang = get_language(spec.lang)
        examples, _ = build_examples(spec, *read_records(spec.data, root, spec.name))
        for ex in examples:
            for text in [*ex.vars.values(), *ex.refs, ex.text, *(ex.choices if spec.choices_field else [])]:
                for part in [text, *text.split("\n")]:
                    norm = lang.normalize(part).strip()
                    if len(norm) >= min_chars:
                        index[norm] = spec.name
    return index


def _train_leaks(cfg: PrepareConfig, out: Path, index: dict[str, str]) -> dict[str, int]:
    leaks: dict[str, int] = {}
    for ds in cfg.datasets:
        cols = LEAK_COLUMNS[ds.kind]
        for row in iter_records(out / ds.name, "train", columns=cols):
            texts = [row[c] or "" for c in cols if c != "messages"]
            texts += [t["content"] for t in row.get("messages") or []]
            for part in (p.strip() for t in texts for p in [t, *t.split("\n")]):
                if part in index:
                    key = f"{ds.name}/{index[part]}"
                    leaks[key] = leaks.get(key, 0) + 1
                    break
    return leaks


def _limited(cfg: PrepareConfig) -> PrepareConfig:
    cfg.workers = 1
    for ds in cfg.datasets:
        for src in ds.sources:
            src.limit = src.limit or LIMIT
    return cfg


def _cases(tmp_path: Path, data_dir: Path) -> list[tuple[str, PrepareConfig, list[Path], Path]]:
    """(name, the prepare config as it runs, tasks to check, their data root) for each shipped recipe and config."""
    from langgraft.demo import _materialise

    cases = []
    shared = [f"eval.data_root={data_dir}"]
    for path in pipeline_recipes():
        plan = load_recipe(path, shared, base_dir=ROOT)
        plan.prepare.root = str(data_dir)  # the recipes name ../shared/data; tests read $LANGGRAFT_DATA
        cases.append((path.name, data_config(plan), resolve_tasks(["all", *task_items(plan)]), data_dir))
    demo = tmp_path / "demo"
    _materialise(demo, print)
    plan = load_recipe(demo / "recipe.yaml", base_dir=demo)
    cases.append(("demo", data_config(plan), resolve_tasks(["all", *task_items(plan)]), demo / "corpus"))
    for path in sorted((ROOT / "recipes" / "data").glob("*.yaml")):  # `data prepare --config` on its own
        cases.append((f"data/{path.name}", load_config(PrepareConfig, path, [f"root={data_dir}"]),
                      resolve_tasks(["all"]), data_dir))
    return cases


def test_no_shipped_recipe_trains_on_evaluated_data(tmp_path, data_dir):
    cases = _cases(tmp_path, data_dir)
    assert {"persian-llama2.yaml", "demo", "data/persian.yaml"} <= {name for name, *_ in cases}
    seen: list[dict] = []
    for name, cfg, tasks, root in cases:
        cfg = _limited(cfg)  # workers=1 too: the worker count never changes a result
        guarded = sorted((spec.name, [str(f) for f in files]) for spec, files in guarded_tasks(cfg))
        key = {**to_dict(cfg), "leak_guard": {**to_dict(cfg.leak_guard), "tasks": guarded, "tasks_root": ""}}
        if key in seen:  # a data config run on its own exactly as a recipe runs it: checked once
            continue
        seen.append(key)
        out = tmp_path / "out" / name.replace("/", "_")
        prepare(cfg, out, progress=False)
        leaks = _train_leaks(cfg, out, _task_index(tasks, root, cfg.leak_guard.min_chars))
        assert leaks == {}, f"{name}: train rows sharing a normalised text with an evaluated record: {leaks}"
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        assert stats["leak_guard"]["overlap_after"] == 0


def test_the_check_sees_the_leak_it_guards_against(tmp_path, data_dir):
    """Without the task guard, the shipped Persian data config trains on the headline and bpc_fa records."""
    cfg = _limited(load_config(PrepareConfig, ROOT / "recipes/data/persian.yaml",
                               [f"root={data_dir}", "leak_guard.tasks=[]"]))
    cfg.datasets = [ds for ds in cfg.datasets if ds.name == "fa_mono"]
    # its news and health sources, narrowed to the two files the tasks score on
    cfg.datasets[0].sources = [src for src in cfg.datasets[0].sources if "fars-news" in src.path or "namnak" in src.path]
    for src in cfg.datasets[0].sources:
        src.path = src.path.replace("-*.json", "-5.json")
    prepare(cfg, tmp_path / "out", progress=False)
    index = _task_index(resolve_tasks(["persian_headline", "bpc_fa"]), data_dir, cfg.leak_guard.min_chars)
    leaks = _train_leaks(cfg, tmp_path / "out", index)
    assert leaks.get("fa_mono/persian_headline", 0) > 0 and leaks.get("fa_mono/bpc_fa", 0) > 0, leaks


def test_guard_reads_every_task_format(tmp_path, data_dir):
    """json (headline: fields + target), tsv/csv choice tasks, parallel NTREX, multiple choice candidates, a
    recipe's own task file; a task whose data is absent is reported, not an error."""
    from langgraft.data.leaks import build_index, missing_tasks, task_texts

    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({"name": "own_bpc", "lang": "fa", "kind": "intrinsic", "metrics": ["bpc"],
                                   "data": {"path": "own.jsonl", "format": "jsonl"}, "text": "body"}),
                   encoding="utf-8")
    (tmp_path / "own.jsonl").write_text(json.dumps({"body": "این یک متن ارزیابی ساختگی برای آزمون است"},
                                                   ensure_ascii=False) + "\n", encoding="utf-8")
    cfg = load_config(PrepareConfig, None, [f"root={data_dir}", "leak_guard.tasks=[persian_headline,farstail,"
                                            f"ntrex_en_fa,parsinlu_mc_lit,{own}]"])
    texts = task_texts(cfg)
    assert set(texts) == {"task persian_headline", "task farstail", "task ntrex_en_fa", "task parsinlu_mc_lit"}
    assert missing_tasks(cfg) == {"own_bpc": str(data_dir / "own.jsonl")}
    headline = news_articles(data_dir, "news/fars-news-5.json", 1)[0]
    fa = get_language("fa")
    assert fa.normalize(headline["title"]).strip() in texts["task persian_headline"]
    ntrex = english_lines(data_dir, 1)[0]
    assert get_language("en").normalize(ntrex).strip() in texts["task ntrex_en_fa"]  # both sides of parallel
    mc = json.loads((data_dir / "parsinlu/data/multiple-choice/test_lit.jsonl").open().readline())
    long_candidates = [c for c in mc["candidates"] if len(fa.normalize(c).strip()) >= 20]
    assert all(fa.normalize(c).strip() in texts["task parsinlu_mc_lit"] for c in long_candidates)
    cfg.leak_guard.tasks_root = str(tmp_path)  # the own task's data is here; the shipped ones are not
    counts = build_index(cfg, tmp_path / "idx.npy")
    assert counts["eval_texts"] == {"task own_bpc": 2}  # the text and its one line
    assert set(counts["tasks_not_found"]) == {"persian_headline", "farstail", "ntrex_en_fa", "parsinlu_mc_lit"}


@pytest.mark.parametrize("bad", ["nope_task", "missing.yaml"])
def test_unknown_guarded_task_is_one_line(tmp_path, data_dir, bad):
    from langgraft.data.leaks import task_texts
    from langgraft.errors import UserError

    cfg = load_config(PrepareConfig, None, [f"root={data_dir}", f"leak_guard.tasks=[{tmp_path / bad if bad.endswith('.yaml') else bad}]"])
    with pytest.raises(UserError, match="nope_task|missing.yaml"):
        task_texts(cfg)


def test_one_index_serves_the_guard_and_the_contamination_check(tmp_path):
    """Texts match as words: a copy that differs in punctuation, case, letter variants, digits or diacritics is
    the same text, for the guard (whole texts and lines) and for the contamination share (word 8-grams)."""
    from langgraft.overlap import OverlapIndex

    eval_text = "این یک متن ارزیابی ساختگی است که نباید در داده آموزش بیاید، سال ۱۴۰۲"
    copy = "اين يك متنِ ارزيابي ساختگي است كه نبايد در داده آموزش بيايد - سال 1402!"
    guard = OverlapIndex([eval_text, "..."])  # a text without words is not indexed
    assert len(guard.texts) == 1
    assert guard.matches([copy]) and guard.matches(["an unrelated first line\n" + copy])
    assert not guard.matches(["این یک متن ارزیابی ساختگی است"]) and not guard.matches(["", "...", "\n"])
    guard.save(tmp_path / "idx.npy")
    assert OverlapIndex.load(tmp_path / "idx.npy").texts == guard.texts
    assert OverlapIndex.load(tmp_path / "absent.npy").texts == set()
    training = OverlapIndex([f"متنی دیگر پیش از آن. {copy} و متنی دیگر پس از آن."], grams=True)
    assert training.share(eval_text) == 1.0  # every 8-gram of it occurs in training text
    assert training.share("این جمله هیچ ربطی به داده آموزش ندارد و تازه نوشته شده است") == 0.0
