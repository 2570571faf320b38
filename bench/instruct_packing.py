"""Instruction tuning: share of computed positions that are real tokens, langgraft's packed rows vs the usual
one-example-per-row batches padded to their longest example (HF `DataCollatorForSeq2Seq`-style dynamic padding).

Real data: the shared Persian and English seed tasks (every instance, instruction/input/output), rendered with
the built-in chat template and the Mistral-7B-v0.3 tokenizer (real, from ../shared/data), block 1024 (the paper's
max length), micro-batch 4; the baseline's batches are drawn in a seeded random order, as a Trainer shuffles.
More real tokens per computed position means fewer steps (and less time) for the same data.

Also timed (an info line, not the RESULT): training tokens/s on the packed rows with one shared causal attention
per row (position ids 0..block-1, sdpa's is_causal path) vs per-example attention (position ids restarting at
each example: transformers builds a block-diagonal mask), forward + backward of a small random Llama (hidden 128,
2 layers, the Mistral vocabulary) in micro-batches of 2 rows, the two interleaved step by step, one torch thread.

    python bench/instruct_packing.py [--block 1024] [--batch 4] [--speed-steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random

from benchdata import DATA  # bench/ is on sys.path when run as a script


def records() -> list[dict]:
    out = []
    for path in ("persian_instruct/persian_seed_tasks.jsonl", "self_instruct/data/seed_tasks.jsonl"):
        for line in (DATA / path).read_text(encoding="utf-8").splitlines():
            for inst in json.loads(line)["instances"]:
                instruction = inst.get("instruction") or json.loads(line).get("instruction", "")
                out.append({"instruction": instruction.strip(), "input": inst["input"].strip(),
                            "output": inst["output"].strip()})
    return out


def main() -> None:
    from transformers import AutoTokenizer

    from langgraft.train.instruct import encode_example, ensure_chat_template, pack_examples

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--speed-steps", type=int, default=4, help="timed training steps of each kind (0: skip)")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(DATA / "tokenizers" / "mistral-7b-v0.3")
    tok.chat_template = None
    ensure_chat_template(tok)
    recs = records()
    packed = pack_examples(recs, tok, args.block)
    ours = packed.efficiency
    lengths = [sum(map(len, encode_example(tok, r))) for r in recs if r["instruction"] and r["output"]]
    lengths = [n for n in lengths if n <= args.block]  # the same examples the packer keeps
    random.Random(0).shuffle(lengths)
    batches = [lengths[i:i + args.batch] for i in range(0, len(lengths), args.batch)]
    computed = sum(max(b) * len(b) for b in batches)
    base = sum(lengths) / computed
    print(f"{len(recs)} records, {packed.examples} packed into {packed.rows.shape[0]} rows of {args.block} "
          f"(skipped: {packed.skipped or 'none'}); baseline: {len(batches)} batches of {args.batch}, "
          f"{computed:,} positions for {sum(lengths):,} tokens")
    if args.speed_steps:
        shared, isolated = attention_speed(packed.rows, len(tok), args.speed_steps)
        print(f"training tokens/s: shared attention {shared:,.0f}, per-example attention {isolated:,.0f} "
              f"(ratio {isolated / shared:.2f}; load {os.getloadavg()[0]:.1f})")
    print(f"RESULT metric={ours:.3f} baseline={base:.3f} ratio={ours / base:.2f}")


def attention_speed(rows, vocab: int, steps: int) -> tuple[float, float]:
    """Tokens/s of forward + backward with shared (position ids 0..T-1) and per-example (restarting) attention."""
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=352,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=rows.shape[-1], attn_implementation="sdpa"))
    shared_positions = torch.arange(rows.shape[-1]).expand(2, -1)
    times = {True: 0.0, False: 0.0}
    for step in range(steps * 2 + 2):
        batch = rows[(2 * step) % (rows.shape[0] - 1):][:2]
        isolated = step % 2 == 1
        t0 = time.perf_counter()
        positions = batch[:, 2] if isolated else shared_positions
        model(input_ids=batch[:, 0], labels=batch[:, 1], position_ids=positions).loss.backward()
        if step >= 2:  # the first step of each kind is a warm-up
            times[isolated] += time.perf_counter() - t0
    tokens = steps * 2 * rows.shape[-1]
    return tokens / times[False], tokens / times[True]


if __name__ == "__main__":
    main()
