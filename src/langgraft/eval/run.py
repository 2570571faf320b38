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
from langgraft.eval.shard import Group, launch_group
from langgraft.eval.speed import new_token_ids
from langgraft.eval.tasks import TaskSpec, default_data_root, load_task, resolve_tasks
from langgraft.formats.results_json import results_path, write_results
from langgraft.model.load import chat_prompt, load_model_or_adapter
from langgraft.rundir import check_name, folder_stamp, input_identity, sha256_path
from langgraft.textfiles import parse_pairs


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
             speed: dict | None = None, *, group: Group = Group()) -> tuple[dict, list[dict]]:
    """Per-metric (n, d) statistics and per-example sample rows for one model on one task; `speed` gets the
    characters and tokens per second of scoring (intrinsic tasks) or generation (`eval.speed`). Under a launch
    (`group`), each rank scores its share of the examples and every rank gets all of them back."""
    from langgraft.eval import scoring
    from langgraft.eval.speed import generation_speed, rates

    spec, exs, batch_size = task.spec, task.examples, opts.batch_size
    shots = spec.shots if opts.shots is None else opts.shots
    speed = {} if speed is None else speed
    label = label if group.main else ""  # one progress line per task, not one per rank
    clock = time.perf_counter()
    if spec.kind == "intrinsic":
        texts = [ex.text for ex in exs]
        nll = group.map(lambda part: scoring.text_nll(model, tok, part, batch_size=batch_size, progress=label), texts)
        speed.update(rates(sum(map(len, texts)), sum(k for _, k in nll), time.perf_counter() - clock))
        stats = M.intrinsic_stats(nll, texts)
        rows = [{"id": ex.id, "nll": n, "tokens": k, "chars": len(ex.text)} for ex, (n, k) in zip(exs, nll)]
        return {m: stats for m in spec.metrics}, rows
    prompts = [with_shots(spec, ex, task.pool, shots) for ex in exs]
    if opts.chat:
        prompts = [chat_prompt(tok, p) for p in prompts]
    if spec.kind == "choice":
        lls = group.map(lambda part: _choice_logliks(model, tok, spec, part, batch_size, label), list(zip(prompts, exs)))
        k = max(len(ex.choices) for ex in exs)
        stats = {m: M.choice_stats(m, lls, [ex.choices for ex in exs], [ex.gold for ex in exs], k)
                 for m in spec.metrics}
        rows = [{"id": ex.id, "prompt": p, "choices": ex.choices, "logliks": ll, "gold": ex.gold,
                 "pred": int(np.argmax(ll))} for ex, p, ll in zip(exs, prompts, lls)]
        return stats, rows
    budget = min(spec.max_new_tokens, opts.max_new_tokens or spec.max_new_tokens)
    clock = time.perf_counter()
    outs = group.map(lambda part: scoring.generate_outputs(
        model, tok, part, max_new_tokens=budget, stop=spec.stop, batch_size=batch_size, progress=label,
        repetition_penalty=opts.repetition_penalty), prompts)
    speed.update(generation_speed(outs, time.perf_counter() - clock, speed.pop("new_ids", frozenset())))
    preds = [o["text"].strip() for o in outs]
    refs = [ex.refs for ex in exs]
    stats = {m: M.generation_stats(m, preds, refs) for m in spec.metrics}
    rows = [{"id": ex.id, "prompt": p, "prediction": y, "refs": ex.refs} for ex, p, y in zip(exs, prompts, preds)]
    return stats, rows


def _choice_logliks(model, tok, spec: TaskSpec, pairs: list[tuple[str, Example]], batch_size: int,
                    label: str) -> list[list[float]]:
    """The log-likelihood of every choice of every (prompt, example), one list per example."""
    from langgraft.eval import scoring

    requests = [(p, spec.choice_prefix + c) for p, ex in pairs for c in ex.choices]
    owners = [k for k, (_, ex) in enumerate(pairs) for _ in ex.choices]
    flat = scoring.loglikelihoods(model, tok, requests, batch_size=batch_size, progress=label, owners=owners)
    lls, at = [], 0
    for _, ex in pairs:
        lls.append(flat[at: at + len(ex.choices)])
        at += len(ex.choices)
    return lls


def evaluate_all(models: dict[str, str], prepared: list[Prepared], opts: EvalOptions, errors: list[str],
                 group: Group = Group()) -> tuple[dict, dict]:
    """runs[model][task] = {"ids", "stats": {metric: array}}, and samples[task] = rows tagged with the model; under
    a launch, on every rank together (`group`), each scoring its share."""
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
                stats, rows = run_task(model, tok, task, opts, f"{name} {task.spec.name}", speed, group=group)
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


def run_eval(models: dict[str, str], tasks: list[str], out: str | Path, opts: EvalOptions | None = None, *,
             data_root: str | None = None, contamination: list[str] = (), force: bool = False):
    """Evaluate, then write results.json, samples/, report.md and charts/ into `out` atomically; returns the
    `rundir.StageResult` with the results document as its `data` (on every rank of a launch)."""
    from langgraft.eval.contamination import build_index
    from langgraft.rundir import StageResult, check_out, run_stage

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
    group = launch_group()
    if not group.main:
        return StageResult(Path(out), {}, skipped=False, data=_follow(group, models, prepared, opts, errors))
    state: dict = {}

    def work(tmp: Path) -> dict:
        group.tell("run")
        runs, samples = evaluate_all(models, prepared, opts, errors, group)
        meta = {t.spec.name: task_meta(t) for t in prepared}
        state["results"] = write_outputs(tmp, models, meta, runs, samples, errors)
        return {"errors": len(errors), "tasks": len(prepared), "models": len(runs), "ranks": group.size}

    try:
        result = run_stage(out, stage="eval", config=config, inputs=inputs, work=work, force=force)
    except Exception as exc:
        group.tell(("error", str(exc)))  # the other ranks stop with the same line instead of waiting
        raise
    doc = json.loads(results_path(out).read_text(encoding="utf-8")) if result.skipped \
        else state["results"]
    group.tell(("done", doc))
    result.data = doc
    return result


def _follow(group: Group, models: dict[str, str], prepared: list[Prepared], opts: EvalOptions,
            errors: list[str]) -> dict:
    """A rank > 0 of a launch: score its shares when rank 0 runs the evaluation; rank 0's results."""
    message = group.hear()
    if message == "run":
        evaluate_all(models, prepared, opts, errors, group)
        message = group.hear()
    kind, payload = message
    if kind == "error":
        raise UserError(payload)
    return payload


def write_outputs(out: Path, models: dict, meta: dict, runs: dict, samples: dict, errors: list[str]) -> dict:
    results, comparisons = summarise(runs, meta)
    timing = {m: {t: r["seconds"] for t, r in tasks.items() if "seconds" in r} for m, tasks in runs.items()}
    speed = {m: {t: r["speed"] for t, r in tasks.items() if r.get("speed")} for m, tasks in runs.items()}
    doc = {"models": models, "tasks": meta, "results": results, "comparisons": comparisons, "errors": errors,
           "timing_s": timing, "speed": speed,
           "tokenizers": {m: next((r.get("tokenizer") for r in tasks.values()), None) for m, tasks in runs.items()}}
    write_samples(out, samples)
    write_results(out, doc)
    write_report(out, doc)
    return doc
