"""Peak memory and tokens/s of a real base's training step at several splits of the same step, and the estimate.

SmolLM2-135M extended with Persian (66,688 rows), the recipe's step of 4 blocks × 512 tokens, bf16 autocast where
the CPU has it. A split `MxA` runs the step as A micro-batches of M blocks (the same blocks in the same step, so
the same pretraining gradient, with M/4 of the activations alive at once); `+ckpt` adds activation checkpointing;
`-peft` reads the trained embedding and head rows through PEFT's layers, which build the whole merged [vocab, dim]
matrix at every micro-batch (`through_peft`: the step before `LossModule.embed` and the kept merged head), and
`-before` also undoes the step's two earlier memory changes (a bool-mask LoRA dropout, frozen linear weights in
bf16 under CPU autocast: `undo_memory_changes`). The first split is the baseline. Each run is its own child
process (its peak RSS is its own, `ru_maxrss`), the configurations alternate for `--rounds` rounds so load on a
shared machine hits each, and the rate counts steps 2..N from the engine's metrics. Each run also reports what
`train/memory.py` estimated before it started, to check the estimate against the measured peak.

    python bench/train_memory.py --model /path/SmolLM2-135M-Instruct [--stage pretrain] [--steps 3] [--rounds 1]
    python bench/train_memory.py --extended OUT/model_extend --dataset OUT/data/fa_mono   # the recipe's own
    python bench/train_memory.py --extended OUT/model_extend --dataset OUT/data/fa_mono \
        --splits 4x1-peft,4x1,2x2-peft,2x2,1x4 --steps 4

RESULT: metric = the last split's peak RSS (MiB), baseline = the first split's, ratio = baseline ÷ ours; the line
before it gives the tokens/s ratio of the same two.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPLIT = re.compile(r"(\d+)x(\d+)(\+ckpt)?(-peft|-before)?")
SPLITS_HELP = ("MxA[+ckpt][-peft|-before]: micro-batch M blocks, A micro-batches a step, activation checkpointing; "
               "-peft: the trained rows through PEFT's layers; -before: that and the two memory changes undone")


def parse_split(split: str) -> tuple[int, int, bool, str]:
    m = SPLIT.fullmatch(split)
    if not m:
        sys.exit(f"--splits: {split!r} is not {SPLITS_HELP.split(':')[0]}")
    return int(m.group(1)), int(m.group(2)), bool(m.group(3)), (m.group(4) or "")[1:]


def through_peft() -> None:
    """The `-peft` step: the input embedding through PEFT's TrainableTokensLayer (the whole merged [vocab, dim]
    matrix built at every forward pass, a dense gradient into it) and the head's merged weight built afresh at
    every micro-batch, as before `LossModule.embed` and `loss.merged_weight`'s cache."""
    import langgraft.train.model as model
    from langgraft.train import loss

    model.LossModule.embed = lambda self, input_ids: None
    model.fused_head_ce = lambda *a, cache=None, **k: loss.fused_head_ce(*a, **k)


def undo_memory_changes() -> None:
    """The step as it was before its two memory changes (the `-before` split): PEFT's own float-mask dropout and
    float32 frozen linear weights that autocast casts at every forward pass."""
    import torch

    import langgraft.train.model as model

    model.LoraDropout = torch.nn.Dropout
    model.narrow_frozen_linears = lambda peft_model: None


def worker(args) -> None:
    import torch

    from langgraft.config import from_dict
    from langgraft.train.config import TrainConfig
    from langgraft.train.stages import train

    torch.set_num_threads(args.threads)
    micro, accum, ckpt, undo = parse_split(args.split)
    if undo:
        through_peft()
    if undo == "before":
        undo_memory_changes()
    cfg = from_dict(TrainConfig, {
        "model": args.extended, "micro_batch_size": micro, "grad_accum": accum, "max_steps": args.steps,
        "gradient_checkpointing": ckpt, "checkpoint_every": 0, "eval_every": 0, "eval_batches": 1, "log_every": 1,
        "optim": {"lr": 2e-4, "embed_lr": 1e-3},
        "data": {"dataset": args.dataset, "block_size": 512, "max_texts": args.max_texts}})
    out = Path(args.out)
    train(args.stage, cfg, out=out)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"tokens_per_s"' in x]
    first, last = lines[0], lines[-1]
    t1, tn = first["tokens"] / first["tokens_per_s"], last["tokens"] / last["tokens_per_s"]
    rate = (last["tokens"] - first["tokens"]) / (tn - t1) if len(lines) > 1 else last["tokens_per_s"]
    print("WORKER " + json.dumps({"tokens_per_s": round(rate, 1), "val_loss": last.get("val_loss"),
                                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}),
          flush=True)


def child(split: str, args, work: Path) -> dict:
    out = work / f"run-{split}-{time.time_ns()}"
    cmd = [sys.executable, __file__, "--worker", "--split", split, "--stage", args.stage, "--extended", args.extended,
           "--dataset", args.dataset, "--out", str(out), "--steps", str(args.steps), "--threads", str(args.threads),
           "--max-texts", str(args.max_texts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("WORKER ")]
    if proc.returncode or not lines:
        sys.exit(f"{split} worker failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("WORKER "):])
    estimate = re.search(r"estimated peak host memory: ([\d.]+) GiB", proc.stdout + proc.stderr)
    result["estimate_mib"] = round(float(estimate.group(1)) * 1024) if estimate else None
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the base HF folder (extended here as the recipe does, cached in --work)")
    ap.add_argument("--extended", help="an extended model folder (e.g. a recipe run's model_extend/)")
    ap.add_argument("--dataset", help="a prepared dataset folder for --extended (e.g. OUT/data/fa_mono)")
    ap.add_argument("--stage", default="pretrain", choices=["align", "pretrain"])
    ap.add_argument("--splits", default="4x1-peft,2x2", help=f"comma-separated, first = baseline: {SPLITS_HELP}")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-texts", type=int, default=300)
    ap.add_argument("--work", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--split", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="langgraft-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.extended:
        from real_base_speed import build_inputs  # bench/ is on sys.path when run as a script

        inputs = build_inputs(args.model, work, args.max_texts)
        args.extended, args.dataset = inputs["model"], inputs["dataset"]
    splits = args.splits.split(",")
    for split in splits:
        parse_split(split)
    runs: dict[str, list[dict]] = {s: [] for s in splits}
    for _ in range(args.rounds):
        for split in splits:
            runs[split].append(child(split, args, work))
            r = runs[split][-1]
            print(f"{args.stage} {split:9s} {r['tokens_per_s']:7.1f} tokens/s, peak RSS {r['peak_rss_mib']:,} MiB "
                  f"(estimated {r['estimate_mib']:,} MiB), val loss {r['val_loss']}; load avg "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    best = {s: max(rs, key=lambda r: r["tokens_per_s"]) | {"peak_rss_mib": max(r["peak_rss_mib"] for r in rs)}
            for s, rs in runs.items()}
    base, ours = best[splits[0]], best[splits[-1]]
    for split, r in best.items():
        print(f"{split}: estimate / measured peak {r['estimate_mib'] / r['peak_rss_mib']:.2f}")
    print(f"speed ratio {ours['tokens_per_s'] / base['tokens_per_s']:.2f} ({splits[-1]} vs {splits[0]})")
    print(f"RESULT metric={ours['peak_rss_mib']} baseline={base['peak_rss_mib']} "
          f"ratio={base['peak_rss_mib'] / ours['peak_rss_mib']:.2f} unit=MiB")


if __name__ == "__main__":
    main()
