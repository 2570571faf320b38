"""Training tokens/s of a real base (SmolLM2-135M) extended with Persian, per stage and precision, on this machine.

Sizes the token budgets of recipes/smollm2-135m-persian.yaml. The model is the base imported with
`langgraft import-gguf`, extended exactly as the recipe does (a 20k-piece Persian BPE trained on news, merged into
its byte-level vocabulary, `langgraft extend`); the data are packed Persian news blocks. Each (stage, precision)
runs `langgraft.train.stages.train` for `--steps` optimizer steps in its own child process; the rate counts
steps 2..N (step 1 pays one-off allocation), from the engine's own metrics.jsonl, by the wall clock and per
CPU-second of the process (on a machine shared with other jobs the wall clock measures the neighbours). The
CPU interval ends when the last metrics line appears, after the engine's closing validation batch, so that
rate is a lower bound. Baseline: fp32, the same
stage, same run; `RESULT` compares bf16 autocast against it on the LoRA pretrain stage (ratio > 1: bf16 faster).

    python bench/real_base_speed.py --model /root/models/smollm2-hf [--steps 4] [--threads 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchdata import VARZESH3, news_documents, write_dataset  # bench/ is on sys.path when run as a script


def build_inputs(model: str, work: Path, max_articles: int) -> dict:
    from langgraft.model.extend import extend_model
    from langgraft.tokenizer.extend import extend_tokenizer
    from langgraft.tokenizer.train import train_tokenizer

    texts = news_documents(VARZESH3)
    (work / "fa.txt").write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
    train_tokenizer([work / "fa.txt"], lang="fa", vocab_size=20000, out=work / "sp", threads=1)
    extend_tokenizer(model, work / "sp", lang="fa", out=work / "tok")
    report = extend_model(model, work / "tok", out=work / "extended")
    ds = write_dataset(work / "data" / "fa_news", {"train": texts[:max_articles], "validation": texts[-50:]})
    return {"model": str(work / "extended"), "dataset": str(ds), "vocab_rows": report["padded_vocab_size"]}


def worker(args) -> None:
    import torch

    from langgraft.config import from_dict
    from langgraft.train.config import TrainConfig
    from langgraft.train.stages import train

    torch.set_num_threads(args.threads)
    inputs = json.loads(Path(args.inputs).read_text())
    out = Path(args.out)
    cfg = from_dict(TrainConfig, {
        "model": inputs["model"], "micro_batch_size": args.micro, "max_steps": args.steps,
        "precision": args.precision_one, "checkpoint_every": 0, "eval_every": 0, "eval_batches": 1, "log_every": 1,
        "lora": {"r": 8, "alpha": 32, "dropout": 0.05},
        "data": {"dataset": inputs["dataset"], "block_size": args.block, "max_texts": args.max_articles}})
    stamps: list[tuple[float, float]] = []  # (wall, process CPU) as each step's metrics line appears
    done = threading.Event()

    def watch() -> None:
        seen = 0
        while not done.wait(0.05):
            path = out / "metrics.jsonl"
            n = path.read_text().count('"tokens_per_s"') if path.is_file() else 0
            if n > seen:
                stamps.extend([(time.perf_counter(), time.process_time())] * (n - seen))
                seen = n

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    train(args.worker, cfg, out=out)
    done.set()
    thread.join()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"tokens_per_s"' in line]
    first, last = lines[0], lines[-1]
    tokens = last["tokens"] - first["tokens"]
    # cumulative rates → elapsed times → the rate of steps 2..N
    t1, tn = first["tokens"] / first["tokens_per_s"], last["tokens"] / last["tokens_per_s"]
    cpu = stamps[-1][1] - stamps[0][1]
    print("WORKER " + json.dumps({"tokens_per_s": round(tokens / (tn - t1), 1), "first_step_s": round(t1, 1),
                                  "tokens_per_cpu_s": round(tokens / cpu, 1)}), flush=True)


def child(stage: str, precision: str, inputs_file: Path, work: Path, args) -> dict:
    out = work / f"run-{stage}-{precision}-{time.time_ns()}"
    cmd = [sys.executable, __file__, "--worker", stage, "--precision-one", precision, "--inputs", str(inputs_file),
           "--out", str(out), "--steps", str(args.steps), "--threads", str(args.threads), "--micro", str(args.micro),
           "--block", str(args.block), "--max-articles", str(args.max_articles)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("WORKER ")]
    if proc.returncode or not lines:
        sys.exit(f"{stage} {precision} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("WORKER "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the base HF model folder (e.g. `langgraft import-gguf` output)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the rate counts steps 2..N)")
    ap.add_argument("--micro", type=int, default=4, help="blocks per step")
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", default="align,pretrain")
    ap.add_argument("--precision", default="bf16,fp32")
    ap.add_argument("--max-articles", type=int, default=400)
    ap.add_argument("--work", default=None, help="cache dir for the extended model and data (default: temp)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="langgraft-bench-realbase-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(args.model, work, args.max_articles)
    inputs_file = work / "inputs.json"
    inputs_file.write_text(json.dumps(inputs))
    print(f"{args.model} extended to {inputs['vocab_rows']} rows; block {args.block} × micro {args.micro}, "
          f"{args.steps} steps, {args.threads} threads; load avg {os.getloadavg()[0]:.1f}", flush=True)
    rates: dict[tuple[str, str], float] = {}
    for stage in args.stages.split(","):
        for precision in args.precision.split(","):
            r = child(stage, precision, inputs_file, work, args)
            rates[stage, precision] = r["tokens_per_s"]
            print(f"{stage:9s} {precision:5s} {r['tokens_per_s']:8.1f} tokens/s wall, {r['tokens_per_cpu_s']:7.1f} "
                  f"tokens per CPU-second (first step {r['first_step_s']} s); load avg {os.getloadavg()[0]:.1f}",
                  flush=True)
    ours, base = rates.get(("pretrain", "bf16")), rates.get(("pretrain", "fp32"))
    if ours and base:
        print(f"RESULT metric={ours} baseline={base} ratio={ours / base:.2f}")


if __name__ == "__main__":
    main()
