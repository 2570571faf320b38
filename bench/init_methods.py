"""Held-out loss right after `langgraft extend`, per `--init` method (mean-subtokens vs random baseline), and
optionally after a short align phase (only the new rows train).

A tiny Llama (`--hidden`, 2 layers, untied head) is first trained on Fars news packed into 128-token blocks of
the real Llama-2 tokenizer (batch 16, AdamW 3e-3 one-cycle, `--steps`), then extended with a real `tokenizer
train` (20k BPE on the same news) + `tokenizer extend` vocabulary (Llama-2 + ~19k Persian tokens) and each init.
Reported on 100 held-out NTREX lines: bits per character, and nats per token split by whether the target is a
new or an old token. `--align-steps N` then trains only the new embedding/head rows for N steps (AdamW 1e-3, the
align recipe's embed_lr; batch 8 × 128 extended-tokenizer blocks of news) and reports the same numbers again.
Ratio > 1 means mean-subtokens is lower (better) than random.

    python bench/init_methods.py [--hidden 128] [--steps 600] [--align-steps 150] [--work DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LANGGRAFT_DATA", ROOT.parent / "shared" / "data"))
BLOCK = 128


def news_lines() -> list[str]:
    news = []
    for f in sorted(glob.glob(str(DATA / "persian_news/exploring-datasets/news/fars-news-*.json"))):
        news += [" ".join([a.get("title", ""), a.get("abstract", "")] + a.get("paragraphs", []))
                 for a in json.loads(Path(f).read_text(encoding="utf-8"))]
    return [t.replace("\n", " ") for t in news]


def blocks(tok, texts: list[str]) -> torch.Tensor:
    ids = torch.cat([torch.tensor(tok(t)["input_ids"] + [tok.eos_token_id]) for t in texts])
    n = len(ids) // BLOCK
    return ids[: n * BLOCK].view(n, BLOCK)


def build(work: Path, steps: int, hidden: int) -> None:
    """Tokenizers and the trained tiny base in `work` (cached: a rerun with the same --work reuses them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from langgraft.vocab.extend import extend_tokenizer
    from langgraft.vocab.train import train_tokenizer

    if (work / "base" / "config.json").is_file():
        return
    (work / "news.txt").write_text("\n".join(news_lines()), encoding="utf-8")
    train_tokenizer([work / "news.txt"], lang="fa", vocab_size=20000, out=work / "sp", threads=1)
    extend_tokenizer(DATA / "tokenizers/llama2/tokenizer.model", work / "sp", lang="fa", out=work / "tok")
    (work / "l2").mkdir(exist_ok=True)
    (work / "l2/tokenizer.model").write_bytes((DATA / "tokenizers/llama2/tokenizer.model").read_bytes())
    (work / "l2/tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    tok = AutoTokenizer.from_pretrained(work / "l2")
    train = blocks(tok, (work / "news.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (16,))]
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    model.save_pretrained(work / "base")
    tok.save_pretrained(work / "base")


@torch.no_grad()
def score(model, tok, texts, n_base: int) -> dict:
    nats = chars = 0.0
    split = {"new": [0.0, 0], "old": [0.0, 0]}
    for text in texts:
        x = tok(text, return_tensors="pt")["input_ids"]
        nll = torch.nn.functional.cross_entropy(model(input_ids=x).logits[0, :-1], x[0, 1:], reduction="none")
        nats += float(nll.sum())
        chars += len(text)
        for key, mask in (("new", x[0, 1:] >= n_base), ("old", x[0, 1:] < n_base)):
            split[key][0] += float(nll[mask].sum())
            split[key][1] += int(mask.sum())
    return {"bpc": nats / math.log(2) / chars, **{f"nats_{k}": v[0] / max(v[1], 1) for k, v in split.items()},
            "targets_new": split["new"][1], "targets_old": split["old"][1]}


def align(model, train: torch.Tensor, new_ids: torch.Tensor, steps: int) -> None:
    """Train only the new embedding/head rows (gradients of all other rows zeroed), transformer frozen."""
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    for p in model.parameters():
        p.requires_grad_(False)
    emb.requires_grad_(True)
    head.requires_grad_(True)
    mask = torch.zeros(emb.shape[0], 1)
    mask[new_ids] = 1.0
    opt = torch.optim.AdamW([emb, head], lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (8,), generator=gen)]
        model(input_ids=batch, labels=batch).loss.backward()
        emb.grad *= mask
        head.grad *= mask
        opt.step()
        opt.zero_grad()
    model.eval()


def line(name: str, r: dict) -> str:
    return (f"{name:28s} {r['bpc']:.3f} bpc; nats/token on new-token targets {r['nats_new']:.2f} "
            f"({r['targets_new']}), on old-token targets {r['nats_old']:.2f} ({r['targets_old']})")


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langgraft.surgery.resize import extend_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny base")
    ap.add_argument("--steps", type=int, default=600, help="training steps (batch 16 × 128 tokens) of the base")
    ap.add_argument("--align-steps", type=int, default=0, help="new-rows-only training steps after extension")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="langgraft-bench-init-"))
    work.mkdir(parents=True, exist_ok=True)
    build(work, args.steps, args.hidden)
    held = (DATA / "ntrex/NTREX-128/newstest2019-ref.fas.txt").read_text(encoding="utf-8").splitlines()[900:1000]
    base_tok, new_tok = AutoTokenizer.from_pretrained(work / "l2"), AutoTokenizer.from_pretrained(work / "tok")
    base = score(AutoModelForCausalLM.from_pretrained(work / "base").eval(), base_tok, held, 10**9)
    print(f"base model on its Llama-2 tokens: {base['bpc']:.3f} bpc", flush=True)
    n_base = len(base_tok)
    new_ids = torch.arange(n_base, len(new_tok))
    train = blocks(new_tok, (work / "news.txt").read_text(encoding="utf-8").splitlines()[:1500]) \
        if args.align_steps else None
    results = {}
    for method in ("mean-subtokens", "random", "mean"):
        extend_model(work / "base", work / "tok", out=work / method, init=method)
        model = AutoModelForCausalLM.from_pretrained(work / method).eval()
        results[method] = score(model, new_tok, held, n_base)
        print(line(method, results[method]), flush=True)
        if args.align_steps:
            align(model, train, new_ids, args.align_steps)
            results[f"{method}+align"] = score(model, new_tok, held, n_base)
            print(line(f"{method} +{args.align_steps} align", results[f"{method}+align"]), flush=True)
    key = "+align" if args.align_steps else ""
    ours, theirs = results["mean-subtokens" + key]["bpc"], results["random" + key]["bpc"]
    print(f"wall {time.time() - start:.0f} s")
    print(f"RESULT metric={ours:.3f} baseline={theirs:.3f} ratio={theirs / ours:.2f}")


if __name__ == "__main__":
    main()
