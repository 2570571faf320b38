"""A warm-up of the new rows on the tokenizer's own corpus, the base as teacher, against static inits and the LM fit.

Arms, all on the same extended real base (transformer and old rows frozen, tied rows as the recipe has them):
static `mean-subtokens` (what `extend` wrote) and `shrunk-subtokens` at step 0; then, from mean-subtokens, the
same `--steps` AdamW steps (lr 1e-3 or `--lr`, batches of 8 × `--block` extended-tokenizer tokens, the same seeded batches
for every arm) with the next-token loss (`objective: lm`, what bench/rows_bound.py fits) or with the base as
teacher (`objective: distill`, train/distill.py), both through the training engine's own loss modules. The
training text is the recipe's `fa_mono` train split (`--corpus`, what its tokenizer learned from), never the
evaluated domains.

Scored like `langgraft eval` (bench/rows_bound.py's `bpc`): NTREX lines 1000-1077 (short held-out news
sentences), the first `--docs` of the recipe's seeded `bpc_fa` Namnak articles and of its `bpc_en` documents.
Each ratio to the base comes with a paired bootstrap 95% CI over documents (the same documents resampled for both
models). "teacher path": the base scoring NTREX on the teacher's tokens (each new token replaced by its base
pieces), the best a perfect distillation can reach there.

    python bench/distill_warmup.py --model models/SmolLM2-135M-Instruct --extended RUN/model_extend \
        --corpus RUN/data/fa_mono [--steps 16] [--docs 20] [--arms mean,shrunk,lm,distill] [--save DIR]

Arms `lm-once`/`distill-once` take each of those blocks once (a seeded order) instead of drawing with
replacement; `lm-cover`/`distill-cover` take each once from the train split's blocks picked to hold the most
distinct new tokens (greedy maximum coverage), so the same budget touches more of the new rows. `ARM@LR` runs an
arm at another rate (e.g. `lm-cover@3e-3`).

RESULT: the best warmed arm's Namnak bpc against the base's (ratio = base ÷ arm; < 1: the graft still costs there).
"""

from __future__ import annotations

import argparse
import glob
import math
import random
import time

import numpy as np
import torch

from rows_bound import eval_texts
from benchdata import DATA


def doc_nats(model, tok, texts: list[str]) -> np.ndarray:
    from langgraft.eval.scoring import text_nll

    return np.array([n for n, _ in text_nll(model, tok, texts)])


def ratio_ci(model: np.ndarray, base: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """sum(model)/sum(base) (the bpc ratio: same characters) and a paired bootstrap 95% CI over documents."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), (n, len(base)))
    boot = model[idx].sum(1) / base[idx].sum(1)
    return float(model.sum() / base.sum()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def corpus_blocks(tok, corpus: str, block: int, n_blocks: int, select: str = "first") -> torch.Tensor:
    """`n_blocks` blocks of the seeded-shuffled train split, each text after one BOS, packed.

    `first`: the first blocks in that order. `cover`: from all of the split's blocks, the ones that together hold
    the most distinct new tokens (greedy maximum coverage: each pick adds the most token types not yet held), so a
    fixed budget of text touches as many new rows as it can."""
    import pyarrow.parquet as pq

    texts = [t for f in sorted(glob.glob(f"{corpus}/train/*.parquet")) for t in pq.read_table(f)["text"].to_pylist()]
    random.Random(0).shuffle(texts)
    ids: list[int] = []
    if select == "first":
        for text in texts:
            ids += [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= block * n_blocks:
                break
        return torch.tensor(ids[: block * n_blocks]).view(n_blocks, block)
    for enc in tok(texts, add_special_tokens=False)["input_ids"]:
        ids += [tok.bos_token_id] + enc
    every = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)
    from langgraft.formats.new_tokens import read_new_tokens

    from langgraft.train.cover import covering_blocks

    pick, held, _ = covering_blocks(every.numpy(), n_blocks, read_new_tokens(tok.name_or_path)["base_vocab_size"])
    print(f"  coverage: {len(pick)} of {len(every):,} blocks hold {held:,} distinct new tokens", flush=True)
    return every[torch.from_numpy(pick)]


def warm_up(ext_dir: str, objective: str, blocks: torch.Tensor, steps: int, once: bool = False, lr: float = 1e-3):
    """The extended model after `steps` steps of `objective` on `blocks` (batches of 8, drawn with replacement, or
    with `once` each block once in a seeded order), merged; CPU seconds."""
    from types import SimpleNamespace

    from langgraft.formats.new_tokens import read_new_tokens
    from langgraft.model.load import load_causal_lm
    from langgraft.train.distill import loss_module
    from langgraft.train.model import build_peft_model

    model = load_causal_lm(ext_dir, dtype=torch.float32)
    new_ids = [t["id"] for t in read_new_tokens(ext_dir)["tokens"]]
    pm = build_peft_model(model, "align", None, new_ids)
    module = loss_module(pm, SimpleNamespace(objective=objective, model=ext_dir, loss_chunk=0))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    cpu, wall = time.process_time(), time.time()
    order = torch.randperm(len(blocks), generator=gen)
    for step in range(steps):
        pick = order[step * 8:(step + 1) * 8] if once else torch.randint(0, len(blocks), (8,), generator=gen)
        loss = module(blocks[pick])
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"  {objective} step {step + 1}: loss {float(loss):.4f} ({time.time() - wall:.0f} s)", flush=True)
    cost = (time.process_time() - cpu, time.time() - wall)
    return pm.merge_and_unload().eval(), cost


def save_extended(model, ext_dir: str, out: str) -> None:
    """`ext_dir` with its weights replaced by `model`'s: same tokenizer, new-token list and manifest."""
    import shutil

    shutil.copytree(ext_dir, out, ignore=shutil.ignore_patterns("*.safetensors"))
    model.save_pretrained(out)


def teacher_path_nats(base, base_tok, new_tok, ext_dir: str, texts: list[str]) -> np.ndarray:
    """The base's nats on each text tokenized as the distillation teacher sees it (new tokens → base pieces)."""
    from langgraft.formats.new_tokens import read_new_tokens
    from langgraft.train.distill import piece_table

    table = piece_table(read_new_tokens(ext_dir), len(new_tok), ext_dir)
    out = []
    with torch.no_grad():
        for text in texts:
            ids = [base_tok.bos_token_id] + [p for i in new_tok(text, add_special_tokens=False)["input_ids"]
                                             for p in table[i]]
            x = torch.tensor([ids])
            out.append(float(base(input_ids=x, labels=x).loss) * (len(ids) - 1))
    return np.array(out)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the base (HF folder)")
    ap.add_argument("--extended", required=True, help="`langgraft extend` output of that base (mean-subtokens)")
    ap.add_argument("--corpus", required=True, help="the tokenizer's prepared dataset (its train split is read)")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW's rate for the rows (the align recipe's embed_lr)")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--arms", default="mean,shrunk,lm,distill")
    ap.add_argument("--save", help="write each warmed arm's merged model to SAVE/<arm> (an `extend` folder whose "
                                   "rows are the warmed ones) for a follow-up `langgraft run --from align`")
    args = ap.parse_args()
    torch.set_num_threads(2)
    base_tok, new_tok = AutoTokenizer.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.extended)
    ntrex = (DATA / "ntrex/NTREX-128/newstest2019-ref.fas.txt").read_text(encoding="utf-8").splitlines()[1000:1078]
    texts = {"NTREX": ntrex, "Namnak": eval_texts("bpc_fa")[: args.docs], "English": eval_texts("bpc_en")[: args.docs]}
    chars = {k: sum(map(len, v)) for k, v in texts.items()}
    base = AutoModelForCausalLM.from_pretrained(args.model).eval()
    ref = {k: doc_nats(base, base_tok, v) for k, v in texts.items()}
    path = teacher_path_nats(base, base_tok, new_tok, args.extended, ntrex)
    lo_hi = ratio_ci(path, ref["NTREX"])
    print(f"teacher path on NTREX: {path.sum() / math.log(2) / chars['NTREX']:.4f} bpc, {lo_hi[0]:.4f}x "
          f"[{lo_hi[1]:.4f}, {lo_hi[2]:.4f}]", flush=True)
    del base
    blocks = {"first": corpus_blocks(new_tok, args.corpus, args.block, 8 * args.steps)}
    if any("-cover" in arm for arm in args.arms.split(",")):
        blocks["cover"] = corpus_blocks(new_tok, args.corpus, args.block, 8 * args.steps, select="cover")
    print(f"warm-up text: {blocks['first'].numel():,} tokens ({args.steps} steps of 8 x {args.block})", flush=True)
    rows = [("base (own tokens)", 0, {k: (1.0, 1.0, 1.0) for k in texts}, {k: v for k, v in ref.items()}, None)]
    for arm in args.arms.split(","):
        if arm in ("mean", "shrunk"):
            model, cost, steps = AutoModelForCausalLM.from_pretrained(args.extended).eval(), None, 0
            if arm == "shrunk":
                from langgraft.formats.new_tokens import read_new_tokens
                from langgraft.model.init import init_shrunk_subtokens

                nt = read_new_tokens(args.extended)
                init_shrunk_subtokens(model.get_input_embeddings().weight.data, nt["tokens"], nt["base_vocab_size"])
        else:
            # lm, distill; -once: each block once; -cover: covering blocks; @LR: this arm's rate instead of --lr
            name, _, lr = arm.partition("@")
            objective, _, how = name.partition("-")
            model, cost = warm_up(args.extended, objective, blocks["cover" if how == "cover" else "first"],
                                  args.steps, once=bool(how), lr=float(lr or args.lr))
            steps = args.steps
            if args.save:
                save_extended(model, args.extended, f"{args.save}/{arm}")
        nats = {k: doc_nats(model, new_tok, v) for k, v in texts.items()}
        cis = {k: ratio_ci(nats[k], ref[k]) for k in texts}
        rows.append((arm, steps, cis, nats, cost))
        print(f"{arm}: " + "  ".join(f"{k} {c[0]:.4f}x [{c[1]:.4f}, {c[2]:.4f}]" for k, c in cis.items())
              + (f"  warm-up {cost[0] / 60:.1f} CPU min, {cost[1] / 60:.1f} min wall" if cost else ""), flush=True)
        del model
    print("\n| rows | steps | " + " | ".join(f"{k} bpc | × base [95% CI]" for k in texts) + " | warm-up CPU min |")
    print("|---|---:|" + "---:|---:|" * len(texts) + "---:|")
    for arm, steps, cis, nats, cost in rows:
        cells = [f"{nats[k].sum() / math.log(2) / chars[k]:.4f} | {c[0]:.4f} [{c[1]:.4f}, {c[2]:.4f}]"
                 for k, c in cis.items()]
        print(f"| {arm} | {steps} | " + " | ".join(cells) + f" | {f'{cost[0] / 60:.1f}' if cost else '—'} |")
    warmed = [(nats["Namnak"].sum(), arm) for arm, steps, _, nats, _ in rows if steps]
    if warmed:  # the best warm-up against the base itself, in Namnak bpc (< 1: it still costs Persian there)
        best, arm = min(warmed)
        print(f"RESULT metric={best / math.log(2) / chars['Namnak']:.4f} "
              f"baseline={ref['Namnak'].sum() / math.log(2) / chars['Namnak']:.4f} "
              f"ratio={ref['Namnak'].sum() / best:.3f} best={arm}")

if __name__ == "__main__":
    main()
