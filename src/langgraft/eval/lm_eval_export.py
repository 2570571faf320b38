"""`langgraft eval --tasks LIST --export-lm-eval DIR`: the chosen tasks as lm-evaluation-harness tasks.

Each task becomes `DIR/TASK.jsonl` (the examples exactly as langgraft scores them: the prompt with its shots, the
choices with the task's choice prefix, the gold index, the references, or the text) and `DIR/TASK.yaml`, which
points lm-eval at that file with column names only, so nothing is translated into another template language and
the harness sees langgraft's own prompts. `DIR/langgraft.yaml` groups them:
`lm_eval --model hf --model_args pretrained=EXPORT/model --include_path DIR --tasks langgraft`.

The metrics are lm-eval's own: choice tasks `acc` and `acc_norm` (lm-eval normalises by the choice's characters,
as langgraft does), generation tasks `exact_match` (langgraft's F1, chrF and ROUGE-L stay langgraft's),
text tasks `bits_per_byte`, `byte_perplexity` and `word_perplexity` (langgraft's bpb; bpc has no lm-eval metric).
Evaluate a merged export (`EXPORT/model`): lm-eval's `peft=` path resizes the vocabulary to the tokenizer's
length and drops the padding rows langgraft adds (to a multiple of 64), which moves the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from langgraft.errors import UserError
from langgraft.eval.options import EvalOptions
from langgraft.eval.records import with_shots
from langgraft.rundir import atomic_dir, output_lock

GROUP = "langgraft"


def export_lm_eval(tasks: list[str], out: str | Path, opts: EvalOptions, *, data_root: str | None = None) -> dict:
    """Write the tasks into `out` (atomically); returns {"tasks": [names], "examples": {name: n}}."""
    from langgraft.eval.run import prepare_tasks
    from langgraft.eval.tasks import default_data_root

    errors: list[str] = []
    prepared = prepare_tasks(tasks, default_data_root(data_root), opts, None, errors)
    if errors:
        raise UserError(f"--export-lm-eval: {len(errors)} task(s) could not be read; nothing written")
    out = Path(out).resolve()
    with output_lock(out), atomic_dir(out) as tmp:
        names = []
        for task in prepared:
            name = f"{GROUP}_{task.spec.name}"
            docs = [_doc(task, ex, opts) for ex in task.examples]
            (tmp / f"{task.spec.name}.jsonl").write_text(
                "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
            spec = _task_yaml(task.spec, name, out / f"{task.spec.name}.jsonl")
            (tmp / f"{task.spec.name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False),
                                                        encoding="utf-8")
            names.append(name)
        (tmp / f"{GROUP}.yaml").write_text(yaml.safe_dump({"group": GROUP, "task": names}), encoding="utf-8")
    return {"tasks": names, "examples": {t.spec.name: len(t.examples) for t in prepared}}


def _doc(task, ex, opts: EvalOptions) -> dict:
    spec = task.spec
    if spec.kind == "intrinsic":
        return {"id": ex.id, "text": ex.text}
    shots = spec.shots if opts.shots is None else opts.shots
    prompt = with_shots(spec, ex, task.pool, shots)
    if spec.kind == "choice":
        return {"id": ex.id, "prompt": prompt, "choices": [spec.choice_prefix + c for c in ex.choices],
                "gold": ex.gold}
    return {"id": ex.id, "prompt": prompt, "target": ex.refs[0] if ex.refs else "", "refs": ex.refs}


def _task_yaml(spec, name: str, data: Path) -> dict:
    common = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
              "test_split": "test"}
    if spec.kind == "intrinsic":
        return {**common, "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "text",
                "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")]}
    if spec.kind == "choice":
        # the choice prefix is already in each choice: no delimiter of lm-eval's own between prompt and choice
        return {**common, "output_type": "multiple_choice", "doc_to_text": "prompt", "doc_to_choice": "choices",
                "doc_to_target": "gold", "target_delimiter": "",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    return {**common, "output_type": "generate_until", "doc_to_text": "prompt", "doc_to_target": "target",
            "generation_kwargs": {"until": list(spec.stop), "max_gen_toks": spec.max_new_tokens, "do_sample": False},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": False, "ignore_punctuation": False}]}
