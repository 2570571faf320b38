"""`langgraft eval`: every model on every task, per-example samples, bootstrap CIs, paired comparisons, report.

Problems with one task (bad YAML, missing file or field) or one model (cannot load) become one error line in
`results.json["errors"]` and on stderr; every other (model, task) still runs and is reported.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from langgraft.config import to_dict
from langgraft.errors import UserError
from langgraft.eval import metrics as M
from langgraft.eval.options import EvalOptions
from langgraft.eval.records import Example, build_examples, data_files, read_records, with_shots
from langgraft.eval.report import write_report
from langgraft.eval.speed import new_token_ids
from langgraft.eval.tasks import TaskSpec, default_data_root, load_task, resolve_tasks
from langgraft.model.load import chat_prompt, load_model_or_adapter
from langgraft.rundir import check_name, folder_stamp, input_identity, sha256_path
from langgraft.textfiles import parse_pairs, read_json_object


@dataclass
class Prepared:
    spec: TaskSpec
    examples: list[Example]  # the evaluated examples (after --limit)
    pool: list[Example]  # all examples, the source of in-context shots
    skipped: Counter
    files: list[str]
    contaminated: list = field(default_factory=list)  # ids of examples at or above the overlap threshold
    overlap: dict | None = None  # checked: example id -> share of its 8-grams in training text (when > 0)
    threshold: float | None = None  # the overlap that flags an example


def parse_models(items: list[str]) -> dict[str, str]:
    """`--model NAME=PATH` items; a NAME becomes a folder name in the output, so it must be a valid name."""
    models = parse_pairs(items, "--model")
    for name, path in models.items():
        check_name(name, f"--model {name}={path}")
    return models


def prepare_tasks(items: list[str], root: Path, opts: EvalOptions, index, errors: list[str]) -> list[Prepared]:
    prepared = []
    for path in resolve_tasks(items):
        try:
            spec = load_task(path)
            records, shown = read_records(spec.data, root, spec.name)
            every, skipped = build_examples(spec, records, shown)
            pool = every
            if spec.shots_data is not None:
                pool = build_examples(spec, *read_records(spec.shots_data, root, spec.name))[0]
        except UserError as exc:
            _error(errors, str(exc))
            continue
        examples = select_examples(every, opts.limit, opts.sample_seed, spec.name)
        if not examples:
            _error(errors, f"task {spec.name}: no examples in {shown} (skipped: {dict(skipped) or 'none'})")
            continue
        files = [str(f) for d in (spec.data, spec.shots_data) if d is not None
                 for f in data_files(d, root, spec.name)]
        task = Prepared(spec, examples, pool, skipped, files)
        if index is not None:
            _check_contamination(task, index, opts.contamination_threshold)
        if skipped:
            print(f"  {spec.name}: skipped {dict(skipped)}", file=sys.stderr)
        prepared.append(task)
    return prepared


def _check_contamination(task: Prepared, index, threshold: float) -> None:
    """Overlap of every example with the training text (its most overlapping input field), flagged ≥ threshold."""
    task.overlap, task.threshold = {}, threshold
    for ex in task.examples:
        share = max(map(index.share, _texts(task.spec, ex)), default=0.0)
        if share > 0:
            task.overlap[ex.id] = round(share, 4)
    task.contaminated = [i for i, share in task.overlap.items() if share >= threshold]
    if task.contaminated:
        top = max(task.overlap.values())
        print(f"langgraft: warning: task {task.spec.name}: {len(task.contaminated)} of {len(task.examples)} "
              f"examples share ≥ {threshold:.0%} of their word 8-grams with the training data (max {top:.0%}; "
              f"ids {task.contaminated[:5]})", file=sys.stderr)


def select_examples(every: list[Example], limit: int | None, seed: int | None, task: str) -> list[Example]:
    """The first `limit` examples, or with a seed a random `limit` of them (kept in data order); the draw depends
    on the seed and the task name only, so every model and every rerun sees the same examples."""
    if not limit or limit >= len(every):
        return every
    if seed is None:
        return every[:limit]
    keep = sorted(random.Random(f"{task}:{seed}").sample(range(len(every)), limit))
    return [every[i] for i in keep]


def _texts(spec: TaskSpec, ex: Example) -> list[str]:
    """The example's input texts, each checked on its own (a premise seen in training is already a leak)."""
    return [ex.text] if spec.kind == "intrinsic" else list(ex.vars.values())


def _error(errors: list[str], line: str) -> None:
    errors.append(line)
    print(f"langgraft: error: {line}", file=sys.stderr)


def run_task(model, tok, task: Prepared, opts: EvalOptions, label: str,
             speed: dict | None = None) -> tuple[dict, list[dict]]:
    """Per-metric (n, d) statistics and per-example sample rows for one model on one task; `speed` gets the
    characters and tokens per second of scoring (intrinsic tasks) or generation (`eval.speed`)."""
    from langgraft.eval import scoring
    from langgraft.eval.speed import rates

    spec, exs, batch_size = task.spec, task.examples, opts.batch_size
    shots = spec.shots if opts.shots is None else opts.shots
    speed = {} if speed is None else speed
    if spec.kind == "intrinsic":
        texts = [ex.text for ex in exs]
        clock = time.perf_counter()
        nll = scoring.text_nll(model, tok, texts, batch_size=batch_size, progress=label)
        speed.update(rates(sum(map(len, texts)), sum(k for _, k in nll), time.perf_counter() - clock))
        stats = M.intrinsic_stats(nll, texts)
        rows = [{"id": ex.id, "nll": n, "tokens": k, "chars": len(ex.text)} for ex, (n, k) in zip(exs, nll)]
        return {m: stats for m in spec.metrics}, rows
    prompts = [with_shots(spec, ex, task.pool, shots) for ex in exs]
    if opts.chat:
        prompts = [chat_prompt(tok, p) for p in prompts]
    if spec.kind == "choice":
        requests = [(p, spec.choice_prefix + c) for p, ex in zip(prompts, exs) for c in ex.choices]
        owners = [k for k, ex in enumerate(exs) for _ in ex.choices]
        flat = scoring.loglikelihoods(model, tok, requests, batch_size=batch_size, progress=label, owners=owners)
        lls, at = [], 0
        for ex in exs:
            lls.append(flat[at: at + len(ex.choices)])
            at += len(ex.choices)
        k = max(len(ex.choices) for ex in exs)
        stats = {m: M.choice_stats(m, lls, [ex.choices for ex in exs], [ex.gold for ex in exs], k)
                 for m in spec.metrics}
        rows = [{"id": ex.id, "prompt": p, "choices": ex.choices, "logliks": ll, "gold": ex.gold,
                 "pred": int(np.argmax(ll))} for ex, p, ll in zip(exs, prompts, lls)]
        return stats, rows
    budget = min(spec.max_new_tokens, opts.max_new_tokens or spec.max_new_tokens)
    preds = scoring.generate(model, tok, prompts, max_new_tokens=budget, stop=spec.stop,
                             batch_size=batch_size, progress=label, repetition_penalty=opts.repetition_penalty,
                             speed=speed)
    preds = [p.strip() for p in preds]
    refs = [ex.refs for ex in exs]
    stats = {m: M.generation_stats(m, preds, refs) for m in spec.metrics}
    rows = [{"id": ex.id, "prompt": p, "prediction": y, "refs": ex.refs} for ex, p, y in zip(exs, prompts, preds)]
    return stats, rows


def evaluate_all(models: dict[str, str], prepared: list[Prepared], opts: EvalOptions,
                 errors: list[str]) -> tuple[dict, dict]:
    """runs[model][task] = {"ids", "stats": {metric: array}}, and samples[task] = rows tagged with the model."""
    runs: dict[str, dict] = {}
    samples: dict[str, list[dict]] = {t.spec.name: [] for t in prepared}
    for name, path in models.items():
        try:
            model, tok = load_model_or_adapter(path, opts.device)
        except UserError as exc:
            _error(errors, f"model {name}: {exc}")
            continue
        runs[name] = {}
        tokenizer = tokenizer_identity(tok)
        new_ids = new_token_ids(path)
        for task in prepared:
            started, speed = time.time(), {"new_ids": new_ids}
            try:
                stats, rows = run_task(model, tok, task, opts, f"{name} {task.spec.name}", speed)
            except UserError as exc:
                _error(errors, f"model {name}: {exc}")
                continue
            runs[name][task.spec.name] = {"ids": [ex.id for ex in task.examples], "stats": stats,
                                          "seconds": round(time.time() - started, 3), "tokenizer": tokenizer,
                                          "speed": _speed(speed, task.spec)}
            for i, row in enumerate(rows):
                row["model"] = name
                row["stats"] = {m: s[i].tolist() for m, s in stats.items()}
                samples[task.spec.name].append(row)
        del model
    return runs, samples


def _speed(speed: dict, spec: TaskSpec) -> dict | None:
    """What a task measured of text per second (scoring or generation; choice tasks: nothing), with its kind."""
    speed.pop("new_ids", None)
    return {**speed, "kind": spec.kind, "lang": spec.lang} if speed else None


def tokenizer_identity(tok) -> str:
    """What makes two models' token counts comparable: the same vocabulary and segmentation."""
    import hashlib

    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def same_tokenizer(a: dict, b: dict) -> bool:
    """Two task runs tokenized alike (a result that does not record its tokenizer is not alike)."""
    return a.get("tokenizer") is not None and a.get("tokenizer") == b.get("tokenizer")


def summarise(runs: dict, task_meta: dict) -> tuple[dict, list[dict]]:
    """Bootstrap every (model, task, metric); pair every later model with the first one on shared examples."""
    results = {m: {t: {metric: M.bootstrap(metric, s) for metric, s in r["stats"].items()}
                   for t, r in tasks.items()} for m, tasks in runs.items()}
    comparisons = []
    names = list(runs)
    for other in names[1:]:
        base = names[0]
        for t, r in runs[other].items():
            if t not in runs[base]:
                continue
            shared = sorted(set(r["ids"]) & set(runs[base][t]["ids"]))
            pos_a = {i: k for k, i in enumerate(r["ids"])}
            pos_b = {i: k for k, i in enumerate(runs[base][t]["ids"])}
            for metric in task_meta[t]["metrics"]:
                if metric in M.PER_TOKEN and not same_tokenizer(r, runs[base][t]):
                    continue  # per-token perplexity of two vocabularies measures different units
                a = r["stats"][metric][[pos_a[i] for i in shared]]
                b = runs[base][t]["stats"][metric][[pos_b[i] for i in shared]]
                cmp = M.paired_bootstrap(metric, a, b)
                cmp.update(task=t, metric=metric, model=other, baseline=base,
                           better=(cmp["delta"] < 0) == (metric in M.LOWER_IS_BETTER))
                comparisons.append(cmp)
    return results, comparisons


def task_meta(task: Prepared) -> dict:
    spec = task.spec
    meta = {"lang": spec.lang, "kind": spec.kind, "suites": spec.suites, "metrics": spec.metrics,
            "description": spec.description, "n": len(task.examples), "skipped": dict(task.skipped),
            "contaminated": task.contaminated, "spec": to_dict(spec)}
    if task.overlap is not None:
        overlap = {str(i): share for i, share in task.overlap.items()}
        meta["contamination"] = {"threshold": task.threshold, "overlap": overlap}
    if spec.kind == "generate" and task.examples:
        from langgraft.eval.floors import generation_floors

        floors = generation_floors(spec.metrics, [ex.refs for ex in task.examples])
        if floors:
            meta["floors"] = floors
    if spec.kind == "choice" and task.examples:
        meta["chance"] = float(np.mean([1 / len(ex.choices) for ex in task.examples]))
        freq = Counter(ex.gold for ex in task.examples)
        meta["class_freq"] = {str(k): v / len(task.examples) for k, v in sorted(freq.items())}
    return meta


def write_samples(out: Path, samples: dict) -> None:
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for t, rows in samples.items():
        with (out / "samples" / f"{t}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_samples(run_dir: Path, task: str) -> dict[str, dict]:
    """runs-shaped {model: {"ids", "stats"}} for one task, rebuilt from samples/TASK.jsonl."""
    per_model: dict[str, dict] = {}
    path = run_dir / "samples" / f"{task}.jsonl"
    if not path.is_file():
        return per_model
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        entry = per_model.setdefault(row["model"], {"ids": [], "rows": {}})
        entry["ids"].append(row["id"])
        for metric, vec in row["stats"].items():
            entry["rows"].setdefault(metric, []).append(vec)
    return {m: {"ids": e["ids"], "stats": {k: np.array(v, dtype=float) for k, v in e["rows"].items()}}
            for m, e in per_model.items()}


def run_eval(models: dict[str, str], tasks: list[str], out: str | Path, opts: EvalOptions | None = None, *,
             data_root: str | None = None, contamination: list[str] = ()) -> dict:
    """Evaluate, then write results.json, samples/, report.md and charts/ into `out` atomically."""
    from langgraft.eval.contamination import build_index
    from langgraft.rundir import check_out, run_stage

    opts = opts or EvalOptions()
    check_out(out, [p for p in (*models.values(), *tasks) if Path(p).exists()])  # never a model or task it reads
    root = default_data_root(data_root)
    errors: list[str] = []
    prepared = prepare_tasks(tasks, root, opts, build_index(list(contamination)), errors)
    # the whole resolved spec of every task (not only its name): an edited task file is a different eval
    config = {"models": models, "model_stamps": {n: folder_stamp(p) for n, p in models.items()},
              "tasks": [t.spec.name for t in prepared], "task_specs": {t.spec.name: to_dict(t.spec) for t in prepared},
              "options": to_dict(opts), "data_root": str(root),
              "contamination": list(contamination),
              # what the training data is, not only where: re-prepared data changes which examples are flagged
              "contamination_identity": [input_identity(c) if Path(c).is_dir() else sha256_path(c)
                                         for c in contamination]}
    inputs = sorted({f for t in prepared for f in t.files})
    state: dict = {}

    def work(tmp: Path) -> dict:
        runs, samples = evaluate_all(models, prepared, opts, errors)
        meta = {t.spec.name: task_meta(t) for t in prepared}
        state["results"] = write_outputs(tmp, models, meta, runs, samples, errors)
        return {"errors": len(errors), "tasks": len(prepared), "models": len(runs)}

    result = run_stage(out, stage="eval", config=config, inputs=inputs, work=work)
    if result.skipped:
        return json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    return state["results"]


def write_outputs(out: Path, models: dict, meta: dict, runs: dict, samples: dict, errors: list[str]) -> dict:
    from langgraft.rundir import write_json

    results, comparisons = summarise(runs, meta)
    timing = {m: {t: r["seconds"] for t, r in tasks.items() if "seconds" in r} for m, tasks in runs.items()}
    speed = {m: {t: r["speed"] for t, r in tasks.items() if r.get("speed")} for m, tasks in runs.items()}
    doc = {"models": models, "tasks": meta, "results": results, "comparisons": comparisons, "errors": errors,
           "timing_s": timing, "speed": speed,
           "tokenizers": {m: next((r.get("tokenizer") for r in tasks.values()), None) for m, tasks in runs.items()}}
    write_samples(out, samples)
    write_json(out / "results.json", doc)
    write_report(out, doc)
    return doc


def compare(dirs: list[str], out: str | Path) -> dict:
    """`eval --compare`: merge earlier eval outputs into `out`, an eval output like any other (same guards)."""
    from langgraft.rundir import run_stage

    for d in map(Path, dirs):
        if not (d / "results.json").is_file():
            raise UserError(f"--compare {d}: no results.json (not a langgraft eval output)")
    state: dict = {}

    def work(tmp: Path) -> dict:
        state["doc"] = merge_evals(dirs, tmp)
        return {"errors": len(state["doc"]["errors"]), "compared": len(dirs)}

    result = run_stage(out, stage="eval", config={"compare": [str(d) for d in dirs]}, inputs=list(dirs), work=work)
    if result.skipped:
        return json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    return state["doc"]


def read_results(path: Path) -> dict:
    """An earlier eval's results.json, its task and suite names checked: they become file names here
    (samples/TASK.jsonl, charts/SUITE.png), so a crafted one must not name a file outside the output."""
    from langgraft.rundir import check_name

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"--compare {path}: not a langgraft results.json ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or not isinstance(doc.get("models"), dict):
        raise UserError(f"--compare {path}: not a langgraft results.json (no models and tasks)")
    for task, meta in doc["tasks"].items():
        check_name(task, f"--compare {path}: tasks")
        suites = meta.get("suites") or [] if isinstance(meta, dict) else None
        if not isinstance(suites, list):
            raise UserError(f"--compare {path}: tasks.{task}: not a task entry")
        for suite in suites:
            check_name(suite, f"--compare {path}: tasks.{task}.suites")
    return doc


def merge_evals(dirs: list[str], out: Path) -> dict:
    """Merge earlier eval outputs into folder `out` (models keep their names; a clash gets `@folder`)."""
    models: dict = {}
    meta: dict = {}
    runs: dict = {}
    samples: dict[str, list[dict]] = {}
    errors: list[str] = []
    for d in map(Path, dirs):
        path = d / "results.json"
        if not path.is_file():
            raise UserError(f"--compare {d}: no results.json (not a langgraft eval output)")
        doc = read_results(path)
        errors += doc.get("errors", [])
        rename = {m: (m if m not in models else f"{m}@{d.name}") for m in doc["models"]}
        for m, new in rename.items():
            models[new] = doc["models"][m]
            runs.setdefault(new, {})
        for t, tm in doc["tasks"].items():
            meta.setdefault(t, tm)
            for m, run in load_samples(d, t).items():
                if m in rename:
                    runs[rename[m]][t] = {**run, "tokenizer": doc.get("tokenizers", {}).get(m),
                                          "speed": doc.get("speed", {}).get(m, {}).get(t)}
            path = d / "samples" / f"{t}.jsonl"
            for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
                row = json.loads(line)
                row["model"] = rename.get(row["model"], row["model"])
                samples.setdefault(t, []).append(row)
    return write_outputs(out, models, meta, runs, samples, errors)
