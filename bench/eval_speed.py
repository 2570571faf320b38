"""Batched log-likelihood scoring (length-sorted batches + prompt KV-cache reuse) vs one request at a time.

Same random Llama-shaped model (real Llama-2 tokenizer), same requests: every choice of the first examples of
every shipped choice task (Persian sentiment, NLI, multiple choice, paraphrase; English SST-2, RTE), as
`langgraft eval` builds them. The baseline is a full forward pass per (prompt, continuation), the way a simple
harness loops. Both must give the same scores.

    python bench/eval_speed.py [--examples 12] [--hidden 256] [--layers 4] [--batch-size 16] [--rounds 4]
                               [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchdata import DATA  # bench/ is on sys.path when run as a script


def build_model(hidden: int, layers: int, tmp: Path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    (tmp / "tokenizer.model").write_bytes((DATA / "tokenizers/llama2/tokenizer.model").read_bytes())
    (tmp / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer",
                                                           "add_bos_token": True}))
    tok = AutoTokenizer.from_pretrained(tmp)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 2),
                         num_key_value_heads=max(hidden // 64, 2), max_position_embeddings=2048)
    return LlamaForCausalLM(config).eval(), tok


def build_requests(n: int) -> list[tuple[str, str]]:
    """The first `n` examples of every shipped choice task, each choice a request, as `langgraft eval` builds them."""
    from langgraft.eval.records import build_examples, read_records, with_shots
    from langgraft.eval.tasks import load_task, shipped_tasks

    requests = []
    for path in shipped_tasks().values():
        spec = load_task(path)
        if spec.kind != "choice":
            continue
        examples, _ = build_examples(spec, *read_records(spec.data, DATA, spec.name))
        for ex in examples[:n]:
            prompt = with_shots(spec, ex, examples, 0)
            requests += [(prompt, spec.choice_prefix + c) for c in ex.choices]
    return requests


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    from langgraft.eval.scoring import loglikelihoods, score_one

    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=12, help="examples per task")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4, help="alternate baseline/ours over this many slices")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine two threads per process spin "
                         "against other jobs and the timings swing several-fold)")
    ap.add_argument("--device", default="cpu", help="torch device (fp32 either way, so scores can be compared)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = build_model(args.hidden, args.layers, Path(tmp))
    model = model.to(args.device)
    requests = build_requests(args.examples)
    print(f"{len(requests)} requests, model hidden={args.hidden} layers={args.layers} vocab={len(tok)}, "
          f"torch threads={torch.get_num_threads()}", file=sys.stderr)
    loglikelihoods(model, tok, requests[:8], batch_size=args.batch_size)  # warm-up both paths
    score_one(model, tok, *requests[0])

    # The machine is shared: alternate the two methods over slices of the requests (whole prompts per slice),
    # so a load spike hits both instead of whichever happened to run then.
    baseline, ours, t_base, t_ours = [], [], 0.0, 0.0
    step = -(-len(requests) // args.rounds)
    lo = 0
    while lo < len(requests):
        hi = min(lo + step, len(requests))
        while hi < len(requests) and requests[hi][0] == requests[hi - 1][0]:
            hi += 1  # never split one prompt's choices across slices
        part, lo = requests[lo:hi], hi
        start = time.perf_counter()
        baseline += [score_one(model, tok, c, x) for c, x in part]
        _sync(args.device)
        t_base += time.perf_counter() - start
        start = time.perf_counter()
        ours += loglikelihoods(model, tok, part, batch_size=args.batch_size)
        _sync(args.device)
        t_ours += time.perf_counter() - start

    diff = max(abs(a - b) for a, b in zip(ours, baseline))
    print(f"one at a time: {t_base:.2f}s, batched+prefix reuse: {t_ours:.2f}s, max |Δ log-lik| {diff:.2e}",
          file=sys.stderr)
    if diff > 1e-2:
        raise SystemExit(f"scores differ by {diff}")
    rate_ours, rate_base = len(requests) / t_ours, len(requests) / t_base
    print(f"RESULT metric={rate_ours:.1f}req/s baseline={rate_base:.1f}req/s ratio={rate_ours / rate_base:.2f}")


if __name__ == "__main__":
    main()
