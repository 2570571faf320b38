"""Is grafting worth it? The method vs its compute-matched and text-matched controls, over seeds.

Arms (each a `langgraft run` of a recipe, the same data and evaluation):
  method        the grafting recipe (tokenizer → extend → align → pretrain), `rows: new`
  control-cm    the control recipe (base tokenizer, LoRA alone) with the method's training time: its pretrain steps
                = (method align steps × align step time + method pretrain steps × pretrain step time) / the
                control's pretrain step time, the three step times measured interleaved in this process (wall time
                of whole runs under a shared machine's load is too noisy to size steps with)
  control-tm    the control with the method's Persian text: its pretrain steps = the method's × (the method's
                characters per token ÷ the base's) on the prepared Persian training split
Instruct is left out (the reduced line compares the pretraining methods). The seed changes training only, so later
arms hard-link the first method run's data, merged tokenizer, extended model and step-0 evaluations (`reuse`) and
start at their first training stage. Every arm runs every seed (the text-matched one only `--tm-seeds` if given) (the recipe's
`seed`: data order, LoRA init, dropout). Reported: each bpc task's mean ± sd per arm, Welch's t-test of the method
against each control across seeds, and training tokens, characters seen and seconds per arm.

    nice -n 10 python bench/control_arms.py --demo --out runs/arms-demo --seeds 0 1 2
    nice -n 10 python bench/control_arms.py --method recipes/smollm2-135m-persian.yaml \\
        --control recipes/smollm2-135m-persian-control.yaml --out runs/arms-size --size-only runs/smollm2-135m-persian
    nice -n 10 python bench/control_arms.py --method recipes/smollm2-135m-persian.yaml \\
        --control recipes/smollm2-135m-persian-control.yaml --out runs/arms-smol --seeds 0 1 2 \\
        --align-steps 12 --pretrain-steps 36 --eval-limit 20 --tasks bpc_fa bpc_fa_ntrex bpc_en --tm-seeds 0

Last line: RESULT metric=<method Persian bpc mean> baseline=<compute-matched control's> ratio=<control/method>
(> 1: the method is better at equal compute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import yaml


def set_steps(overrides: list[str], steps: int) -> list[str]:
    return [o for o in overrides if not o.startswith("max_steps=")] + [f"max_steps={steps}"]


def write_recipe(doc: dict, path: Path, out: Path, seed: int, args) -> Path:
    doc = json.loads(json.dumps(doc))
    doc.update(out=str(out), seed=seed)
    doc.setdefault("instruct", {})["dataset"] = ""  # the reduced line: pretraining methods only
    ev = doc.setdefault("eval", {})
    if args.eval_limit:
        ev["limit"] = args.eval_limit
    if args.tasks:
        ev["tasks"] = args.tasks
    ev["stages"] = [s for s in ev.get("stages", ["base", "extended", "align", "pretrain"]) if s != "instruct"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# what a later arm takes from the first method run instead of rebuilding it: the seed touches only training, so
# the prepared data, the merged tokenizer, the extended model and the step-0 evaluations are the same in every arm
SHARED = {"method": ("data", "tokenizer", "tokenizer_extend", "model_extend", "eval/base", "eval/extended"),
          "control": ("data", "eval/base")}


def reuse(first: Path, out: Path, kind: str) -> str:
    """Hard-link the first method run's shared outputs into `out`; the stage the arm then starts from."""
    import shutil

    for part in SHARED[kind]:
        if (first / part).is_dir() and not (out / part).exists():
            (out / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(first / part, out / part, copy_function=os.link)
    return "align" if kind == "method" else "pretrain"


def run_arm(recipe: Path, base_dir: Path, start: str | None = None) -> dict:
    from langgraft.pipeline.run import run_recipe

    result = run_recipe(recipe, base_dir=base_dir, start=start, log=lambda line: None)
    summary = json.loads((Path(result["out"]) / "report" / "summary.json").read_text(encoding="utf-8"))
    last = summary["stages"][-1]
    bpc = {task: e["values"][last] for per in summary["intrinsic"].values() for task, e in per.items()
           if e["metric"] == "bpc"}
    training = summary["training"]
    return {"bpc": bpc, "seconds": sum(t["seconds"] for t in training.values()),
            "tokens": sum(t["tokens"] for t in training.values()),
            "fa_chars": sum(t["chars_seen"] or 0 for t in training.values() if t["lang"] == "fa"),
            "training": training}


def step_times(method_model: str, control_model: str, cfg_method, cfg_control, rounds: int) -> dict:
    """Seconds per optimizer step of method align, method pretrain and control pretrain, measured interleaved."""
    from langgraft.formats.new_tokens import read_new_tokens
    from langgraft.model.load import load_causal_lm
    from langgraft.train.model import LossModule, build_peft_model
    from langgraft.train.model import build_optimizer, use_bf16

    def make(model_dir: str, stage: str, cfg):
        ids = [t["id"] for t in read_new_tokens(model_dir)["tokens"]] if cfg.rows == "new" else []
        peft_model = build_peft_model(load_causal_lm(model_dir), stage, cfg, ids)
        for p in peft_model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        vocab = peft_model.get_input_embeddings().weight.shape[0] if hasattr(
            peft_model.get_input_embeddings(), "weight") else 1000
        batch = torch.randint(0, min(vocab, 49_000), (cfg.micro_batch_size, cfg.data.block_size))
        return LossModule(peft_model, cfg.loss_chunk), build_optimizer(peft_model, cfg), batch

    arms = {"method_align": make(method_model, "align", cfg_method["align"]),
            "method_pretrain": make(method_model, "pretrain", cfg_method["pretrain"]),
            "control_pretrain": make(control_model, "pretrain", cfg_control["pretrain"])}
    bf16 = use_bf16(cfg_method["pretrain"].precision)
    times: dict = {k: [] for k in arms}
    for r in range(rounds + 1):
        for name, (loss_module, opt, batch) in arms.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_module(batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def chars_per_token(dataset: Path, tokenizer_dir: str, n: int = 2000) -> float:
    from transformers import AutoTokenizer

    from langgraft.data.load import iter_texts

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = [t for _, t in zip(range(n), iter_texts(str(dataset), "train"))]
    return sum(map(len, texts)) / sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)


def control_plan(control: dict, out: Path, seed: int, args, base_dir: Path):
    from langgraft.pipeline.recipe import load_recipe

    return load_recipe(write_recipe(control, out / "recipes" / "probe.yaml", out / "probe", seed, args),
                       base_dir=base_dir)


def size_controls(plan_m, plan_c, method_out: Path, rounds: int) -> dict:
    """The controls' pretrain steps: compute-matched from step times measured interleaved here, text-matched from
    both tokenizers' characters per token on the method's prepared Persian training split (`method_out`: a method
    run folder with model_extend, tokenizer_extend and data)."""
    a_steps, p_steps = plan_m.train["align"].max_steps, plan_m.train["pretrain"].max_steps
    times = step_times(str(method_out / "model_extend"), plan_c.base_model, plan_m.train, plan_c.train, rounds)
    fa = method_out / "data" / plan_m.recipe.pretrain.dataset
    cpt_m = chars_per_token(fa, str(method_out / "tokenizer_extend"))
    cpt_c = chars_per_token(fa, plan_c.base_tokenizer)
    sizing = {"step_seconds": times, "method_steps": [a_steps, p_steps],
              "control_cm_steps": round((a_steps * times["method_align"] + p_steps * times["method_pretrain"])
                                        / times["control_pretrain"]),
              "control_tm_steps": round(p_steps * cpt_m / cpt_c),
              "chars_per_token": {"method": cpt_m, "control": cpt_c}}
    print(f"sizing: {json.dumps(sizing)}", flush=True)
    return sizing


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method")
    ap.add_argument("--control")
    ap.add_argument("--demo", action="store_true", help="the demo's recipe.yaml and control.yaml, built in --out")
    ap.add_argument("--base-dir", default=".")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--align-steps", type=int)
    ap.add_argument("--pretrain-steps", type=int)
    ap.add_argument("--eval-limit", type=int)
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--tm-seeds", type=int, nargs="*",
                    help="seeds of the text-matched control (default: --seeds); it costs ~4x a method arm")
    ap.add_argument("--arms", nargs="+", choices=["method", "control-cm", "control-tm"],
                    default=["method", "control-cm", "control-tm"],
                    help="the arms to run; without method, the first method recipe runs to model_extend only "
                         "(data, tokenizer, extended model, step-0 evaluations), which is what sizing and reuse need")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds for the step times")
    ap.add_argument("--size-only", metavar="METHOD_OUT",
                    help="only size the controls from an existing method run folder (model_extend, data, ...)")
    args = ap.parse_args()
    from langgraft.pipeline.recipe import load_recipe

    out = Path(args.out).resolve()
    base_dir = Path(args.base_dir).resolve()
    if args.demo:
        from langgraft.demo import _materialise, build_base

        base_dir = out / "demo"
        _materialise(base_dir, lambda line: None)
        build_base(base_dir / "base", base_dir / "corpus" / "en.txt")
        args.method, args.control = base_dir / "recipe.yaml", base_dir / "control.yaml"
    method = yaml.safe_load(Path(args.method).read_text(encoding="utf-8"))
    control = yaml.safe_load(Path(args.control).read_text(encoding="utf-8"))
    for stage, steps in (("align", args.align_steps), ("pretrain", args.pretrain_steps)):
        if steps:
            method[stage]["overrides"] = set_steps(method[stage].get("overrides", []), steps)
    if args.size_only:
        plan_m = load_recipe(write_recipe(method, out / "recipes" / "method-size.yaml", out / "unused", 0, args),
                             base_dir=base_dir)
        size_controls(plan_m, control_plan(control, out, 0, args, base_dir), Path(args.size_only), args.rounds)
        return
    results: dict = {"method": {}, "control-cm": {}, "control-tm": {}}
    sizing: dict = {}
    first = out / f"method-{args.seeds[0]}"
    runs = [("method", s) for s in args.seeds[:1]] + [("control-cm", s) for s in args.seeds[:1]]
    runs += [r for s in args.seeds[1:] for r in (("method", s), ("control-cm", s))]
    runs += [("control-tm", s) for s in (args.seeds if args.tm_seeds is None else args.tm_seeds)]
    runs = [r for r in runs if r[0] in args.arms]
    if "method" not in args.arms:  # the shared outputs and the sizing still come from the first method recipe
        from langgraft.pipeline.run import run_recipe

        path = write_recipe(method, out / "recipes" / f"method-{args.seeds[0]}.yaml", first, args.seeds[0], args)
        run_recipe(path, base_dir=base_dir, stop="model_extend", log=lambda line: None)
        plan_m = load_recipe(path, base_dir=base_dir)
        sizing = size_controls(plan_m, control_plan(control, out, args.seeds[0], args, base_dir), plan_m.out,
                               args.rounds)
    for arm, seed in runs:
        if arm == "method":
            path = write_recipe(method, out / "recipes" / f"method-{seed}.yaml", out / f"method-{seed}", seed, args)
            start = reuse(first, out / f"method-{seed}", "method") if seed != args.seeds[0] else None
        else:
            doc = json.loads(json.dumps(control))
            steps = sizing["control_cm_steps" if arm == "control-cm" else "control_tm_steps"]
            doc["pretrain"]["overrides"] = set_steps(doc["pretrain"].get("overrides", []), steps)
            path = write_recipe(doc, out / "recipes" / f"{arm}-{seed}.yaml", out / f"{arm}-{seed}", seed, args)
            start = reuse(first, out / f"{arm}-{seed}", "control")
        results[arm][seed] = run_arm(path, base_dir, start)
        print(f"{arm} seed {seed}: {results[arm][seed]['bpc']}, {results[arm][seed]['seconds']:.0f} s",
              flush=True)
        if arm == "method" and seed == args.seeds[0]:  # size the controls once, from the first method run
            plan_m = load_recipe(path, base_dir=base_dir)
            sizing = size_controls(plan_m, control_plan(control, out, seed, args, base_dir), plan_m.out, args.rounds)
        (out / "arms.partial.json").write_text(json.dumps({"results": results, "sizing": sizing}, indent=1,
                                                          default=str))
    report(results, sizing, out)


def report(results: dict, sizing: dict, out: Path) -> None:
    results = {arm: runs for arm, runs in results.items() if runs}
    tasks = list(next(iter(next(iter(results.values())).values()))["bpc"])
    lines = ["| arm | " + " | ".join(f"{t} bpc" for t in tasks) + " | training tokens | fa characters seen | "
             "training s |", "|---|" + "---|" * (len(tasks) + 3)]
    for arm, runs in results.items():
        cells = []
        for t in tasks:
            v = [r["bpc"][t] for r in runs.values()]
            cells.append(f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}")
        mean = {k: statistics.mean(r[k] for r in runs.values()) for k in ("tokens", "fa_chars", "seconds")}
        lines.append(f"| {arm} (n={len(runs)}) | " + " | ".join(cells) +
                     f" | {mean['tokens']:,.0f} | {mean['fa_chars']:,.0f} | {mean['seconds']:,.0f} |")
    lines += ["", "Welch's t-test, method vs control, across seeds (t < 0: the method's bpc is lower):", ""]
    for arm in ("control-cm", "control-tm") if "method" in results else ():
        if arm not in results:
            continue
        for t in tasks:
            a = [r["bpc"][t] for r in results["method"].values()]
            b = [r["bpc"][t] for r in results[arm].values()]
            stat, p = welch(a, b)
            lines.append(f"- {t}, method vs {arm}: Δ {statistics.mean(a) - statistics.mean(b):+.3f} bpc, "
                         f"t = {stat:.2f}, p = {p:.3g}")
    text = "\n".join(lines)
    print(text)
    (out / "arms.md").write_text(text + "\n", encoding="utf-8")
    (out / "arms.json").write_text(json.dumps({"results": results, "sizing": sizing}, indent=1, default=str))
    fa = next(t for t in tasks if "fa" in t)
    if "method" in results:  # against the compute-matched control, else the text-matched one
        other = results.get("control-cm") or results.get("control-tm")
        m = statistics.mean(r["bpc"][fa] for r in results["method"].values())
        c = statistics.mean(r["bpc"][fa] for r in other.values()) if other else float("nan")
        print(f"RESULT metric={m:.4f} baseline={c:.4f} ratio={c / m:.3f}")


if __name__ == "__main__":
    main()
