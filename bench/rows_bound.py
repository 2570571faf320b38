"""How far can the new rows alone go? Step 0 of an extended real base against new rows fitted by gradient descent.

Every `--init` is a rule that writes the new embedding/head rows and leaves the transformer and every old row alone.
Rows fitted by gradient descent on Persian text (next-token loss, transformer and old rows frozen, AdamW 1e-3, batch
8 × `--block` extended-tokenizer tokens) bound from below what any such rule can reach: if fitted rows do not get
Persian back to the base's bits per character, no init can. Fitting on `--fit namnak-rest` (the Namnak articles the
recipe does not evaluate on, the same site and genre) is the in-domain bound; `--fit news` (Fars news articles)
is what a tokenizer corpus offers.

Scored, in bits per character, on two held-out Persian texts that no langgraft stage trains on: NTREX lines 1000+
(78 single news sentences, ~11k characters) and the recipe's own `bpc_fa` documents (the 40 seeded Namnak health
articles `eval.limit: 40, sample_seed: 0` picks, first 2,000 characters each, ~77k characters), plus the recipe's
40 `bpc_en` documents in English. Every text is scored by `langgraft eval`'s own scorer (BOS, windows of 1,024
tokens), so the base's Namnak number is the recipe's 2.90; the base on its own tokens. English ids are unchanged
by the extension (asserted).

    python bench/rows_bound.py --model models/SmolLM2-135M-Instruct --extended runs/smollm2-135m-persian/model_extend \
        [--fit namnak-rest|news] [--steps 0,16,48] [--untied] [--docs 20]

RESULT: the fitted rows' best Persian bpc on the long documents vs the base's (ratio < 1: even fitted rows cost
Persian there, so the step-0 cost on such text cannot be removed by an init).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from benchdata import DATA, article_texts, news_articles, FARS
from init_methods import align


def eval_texts(task: str, rest: bool = False) -> list[str]:
    """The texts `langgraft eval` scores for `task` at the recipe's limit 40, seed 0 (or every other one)."""
    from langgraft.eval.records import build_examples, read_records
    from langgraft.eval.run import select_examples
    from langgraft.eval.tasks import load_task, shipped_tasks

    spec = load_task(shipped_tasks()[task])
    every = build_examples(spec, *read_records(spec.data, DATA, task))[0]
    picked = select_examples(every, 40, 0, task)
    if not rest:
        return [e.text for e in picked]
    ids = {e.id for e in picked}
    return [e.text for e in every if e.id not in ids]


def bpc(model, tok, texts: list[str]) -> float:
    """Bits per character, scored by the eval's own `text_nll` (its BOS and 1,024-token windows)."""
    from langgraft.eval.scoring import text_nll

    return sum(n for n, _ in text_nll(model, tok, texts)) / math.log(2) / sum(map(len, texts))


def fit_blocks(tok, which: str, block: int) -> torch.Tensor:
    texts = eval_texts("bpc_fa", rest=True) if which == "namnak-rest" else \
        [" ".join(article_texts(a)) for a in news_articles(FARS)[:400]]
    ids = torch.cat([torch.tensor([tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]) for t in texts])
    n = len(ids) // block
    return ids[: n * block].view(n, block)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the base (HF folder)")
    ap.add_argument("--extended", required=True, help="`langgraft extend` output of that base")
    ap.add_argument("--fit", choices=["namnak-rest", "news"], default="namnak-rest")
    ap.add_argument("--steps", default="0,16,48", help="cumulative fitting steps to score after")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--untied", action="store_true", help="give the extended model its own head (a copy) first")
    ap.add_argument("--docs", type=int, default=40, help="how many of the 40 bpc_fa documents to score")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    base_tok, new_tok = AutoTokenizer.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.extended)
    texts = {"NTREX (sentences)": (DATA / "ntrex/NTREX-128/newstest2019-ref.fas.txt").read_text(
        encoding="utf-8").splitlines()[1000:1078], "Namnak (documents)": eval_texts("bpc_fa")[: args.docs]}
    english = eval_texts("bpc_en")
    texts["English"] = english
    assert [base_tok(t)["input_ids"] for t in english] == [new_tok(t)["input_ids"] for t in english], \
        "extended tokenizer re-tokenizes English"
    base = AutoModelForCausalLM.from_pretrained(args.model).eval()
    ref = {k: bpc(base, base_tok, v) for k, v in texts.items()}
    del base
    n_base = len(base_tok)
    ext = AutoModelForCausalLM.from_pretrained(args.extended).eval()
    if args.untied:
        ext.config.tie_word_embeddings = False
        ext.lm_head.weight = torch.nn.Parameter(ext.get_input_embeddings().weight.detach().clone())
    train = fit_blocks(new_tok, args.fit, args.block)
    print(f"fit on {args.fit}: {train.numel():,} tokens in {len(train)} blocks; base bpc {ref}", flush=True)
    rows, done = [], 0
    for steps in map(int, args.steps.split(",")):
        start = time.time()
        align(ext, train, torch.arange(n_base, len(new_tok)), steps - done)
        done = steps
        row = {k: bpc(ext, new_tok, v) for k, v in texts.items()}
        rows.append((steps, row))
        print(f"{steps} steps ({time.time() - start:.0f} s): "
              + "  ".join(f"{k} {v:.4f} ({v / ref[k]:.3f}x)" for k, v in row.items()), flush=True)
    kind = "untied" if args.untied else "tied"
    print(f"\n| fitted steps ({kind}, on {args.fit}) | " + " | ".join(f"{k} bpc | × base" for k in ref) + " |")
    print("|---:|" + "---:|---:|" * len(ref))
    print("| base | " + " | ".join(f"{v:.4f} | 1.000" for v in ref.values()) + " |")
    for steps, row in rows:
        print(f"| {steps} | " + " | ".join(f"{row[k]:.4f} | {row[k] / ref[k]:.3f}" for k in ref) + " |")
    best = min(row["Namnak (documents)"] for _, row in rows)
    theirs = ref["Namnak (documents)"]
    print(f"RESULT metric={best:.4f} baseline={theirs:.4f} ratio={theirs / best:.3f}")


if __name__ == "__main__":
    main()
