"""Instruction tuning: share of computed positions that are real tokens, langgraft's packed rows vs the usual
one-example-per-row batches padded to their longest example (HF `DataCollatorForSeq2Seq`-style dynamic padding).

Real data: the shared Persian and English seed tasks (every instance, instruction/input/output), rendered with
the built-in chat template and the Mistral-7B-v0.3 tokenizer (real, from ../shared/data), block 1024 (the paper's
max length), micro-batch 4; the baseline's batches are drawn in a seeded random order, as a Trainer shuffles.
More real tokens per computed position means fewer steps (and less time) for the same data.

    python bench/instruct_packing.py [--block 1024] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LANGGRAFT_DATA", ROOT.parent / "shared" / "data"))


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
    print(f"RESULT metric={ours:.3f} baseline={base:.3f} ratio={ours / base:.2f}")


if __name__ == "__main__":
    main()
