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

Real-base mode (`--model DIR`, an HF causal LM such as SmolLM2-135M-Instruct from `langgraft import-gguf`): a 20k
BPE `tokenizer train` on the Fars news minus a held-out tenth (articles whose link's SHA-1 starts with a byte
≡ 0 mod 10) merged into the model's tokenizer with `tokenizer extend`; then `langgraft extend` with every
`--init` on the model as is and on an untied copy (head cloned from the tied matrix; shrunk-subtokens and `random`),
and each is scored at step 0 on held-out text that no langgraft stage trains on: `--text confirm` (default) is
NTREX lines 1000+ (Persian and English, validation-only in every shipped recipe), `--text tune` is the held-out
news abstracts + RTE dev premises shrunk-subtokens' factor was chosen on. Both ~12k characters per language. Prints
Persian and English bits per character (the base on its own tokens) and the new tokens' share of probability in
each language. English ids are the same under both tokenizers (asserted) and extension leaves the transformer
and every old row untouched, so English is scored from the base's hidden states and each extended head.
`--align-steps N` also trains shrunk-subtokens' and mean-subtokens' new rows (tied) for N steps of the tiny mode's
align (batch 8 × 128 extended-tokenizer blocks of the non-held-out news, AdamW 1e-3) and scores them again.
RESULT: the first method's (shrunk-subtokens) Persian bpc at step 0 vs the base's (ratio < 1 = it still costs Persian).

    python bench/init_methods.py --model /root/models/smollm2-hf [--text confirm|tune] [--align-steps 8] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchdata import DATA, FARS, article_texts, news_articles, news_documents

BLOCK = 128


def news_lines() -> list[str]:
    return [t.replace("\n", " ") for t in news_documents(FARS, sep=" ")]


def blocks(tok, texts: list[str]) -> torch.Tensor:
    ids = torch.cat([torch.tensor(tok(t)["input_ids"] + [tok.eos_token_id]) for t in texts])
    n = len(ids) // BLOCK
    return ids[: n * BLOCK].view(n, BLOCK)


def build(work: Path, steps: int, hidden: int) -> None:
    """Tokenizers and the trained tiny base in `work` (cached: a rerun with the same --work reuses them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from langgraft.tokenizer.extend import extend_tokenizer
    from langgraft.tokenizer.train import train_tokenizer

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
    opt = torch.optim.AdamW([emb] if head is emb else [emb, head], lr=1e-3, weight_decay=0.0)  # tied: one matrix
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (8,), generator=gen)]
        model(input_ids=batch, labels=batch).loss.backward()
        emb.grad *= mask
        if head is not emb:
            head.grad *= mask
        opt.step()
        opt.zero_grad()
    model.eval()


def line(name: str, r: dict) -> str:
    return (f"{name:28s} {r['bpc']:.3f} bpc; nats/token on new-token targets {r['nats_new']:.2f} "
            f"({r['targets_new']}), on old-token targets {r['nats_old']:.2f} ({r['targets_old']})")


def held_out_news(held: bool) -> list[str]:
    """Fars news articles split by a hash of their link: `held` picks the tenth no tokenizer here trains on."""
    return [a for a in news_articles(FARS) if (hashlib.sha1(a.get("link", "").encode()).digest()[0] % 10 == 0) == held]


def take(lines, chars: int = 12000) -> list[str]:
    """Lines of at least 40 characters, in order, until `chars` characters."""
    out, total = [], 0
    for line in lines:
        line = line.strip()
        if len(line) >= 40 and total < chars:
            out.append(line)
            total += len(line)
    return out


def held_texts(which: str) -> tuple[list[str], list[str]]:
    """(Persian, English) documents, Persian normalised like `data prepare` does."""
    import csv

    from langgraft.lang import get_language

    norm = get_language("fa").normalize
    if which == "tune":
        with open(DATA / "rte/RTE/dev.tsv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return take(norm(a["abstract"]) for a in held_out_news(True)), take(r["sentence1"] for r in rows)
    ntrex = DATA / "ntrex/NTREX-128"
    fa = (ntrex / "newstest2019-ref.fas.txt").read_text(encoding="utf-8").splitlines()[1000:]
    en = (ntrex / "newstest2019-src.eng.txt").read_text(encoding="utf-8").splitlines()[1000:]
    return take(norm(t) for t in fa), take(en)


def build_real(work: Path, model: str) -> None:
    """Extended tokenizer for `model` and an untied copy of it (cached in `work`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langgraft.tokenizer.extend import extend_tokenizer
    from langgraft.tokenizer.train import train_tokenizer

    if not (work / "tok" / "new_tokens.json").is_file():
        texts = [" ".join(article_texts(a)) for a in held_out_news(False)]
        (work / "news.txt").write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
        train_tokenizer([work / "news.txt"], lang="fa", vocab_size=20000, out=work / "sp", threads=1)
        extend_tokenizer(model, work / "sp", lang="fa", out=work / "tok")
    if not (work / "untied" / "config.json").is_file():
        m = AutoModelForCausalLM.from_pretrained(model)
        m.config.tie_word_embeddings = False
        m.lm_head.weight = torch.nn.Parameter(m.get_input_embeddings().weight.detach().clone())
        m.save_pretrained(work / "untied")
        AutoTokenizer.from_pretrained(model).save_pretrained(work / "untied")


@torch.no_grad()
def hidden_states(model, seqs: list[list[int]], batch_tokens: int = 2048) -> list[torch.Tensor]:
    """Final (normed) hidden states per sequence, right-padded batches of similar length."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list = [None] * len(seqs)
    while order:
        n = max(1, batch_tokens // len(seqs[order[0]]))
        idx, order = order[:n], order[n:]
        width = max(len(seqs[k]) for k in idx)
        x = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros_like(x)
        for r, k in enumerate(idx):
            x[r, :len(seqs[k])] = torch.tensor(seqs[k])
            mask[r, :len(seqs[k])] = 1
        h = model.model(input_ids=x, attention_mask=mask).last_hidden_state
        for r, k in enumerate(idx):
            out[k] = h[r, :len(seqs[k])].float()
    return out


@torch.no_grad()
def score_hidden(hs: list[torch.Tensor], seqs: list[list[int]], head: torch.Tensor, n_base: int,
                 chars: int) -> dict:
    """Bits per character of the text after the leading separator, and the mean probability on ids ≥ n_base."""
    nats = mass = 0.0
    count = 0
    for h, s in zip(hs, seqs):
        h, y = h[:-1], torch.tensor(s[1:])  # the last position predicts past the document: not scored
        for a in range(0, len(y), 512):
            logp = (h[a:a + 512] @ head.T).log_softmax(-1)
            nats -= float(logp.gather(1, y[a:a + 512, None]).sum())
            mass += float(logp[:, n_base:].exp().sum())
            count += len(y[a:a + 512])
    return {"bpc": nats / math.log(2) / chars, "mass": mass / count}


def real_base(args) -> None:
    """Every `--init` at step 0 on a real base, tied and untied (module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langgraft.model.init import METHODS
    from langgraft.model.extend import extend_model

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="langgraft-bench-init-real-"))
    work.mkdir(parents=True, exist_ok=True)
    build_real(work, args.model)
    fa, en = held_texts(args.text)
    base_tok, new_tok = AutoTokenizer.from_pretrained(args.model), AutoTokenizer.from_pretrained(work / "tok")
    # every document is scored after one separator token (the pretraining document separator where the vocabulary
    # has one), so all its characters count
    sep = base_tok.get_vocab().get("<|endoftext|>", base_tok.eos_token_id)
    enc = lambda tok, docs: [[sep] + tok(d)["input_ids"] for d in docs]  # noqa: E731
    en_ids, fa_base, fa_new = enc(base_tok, en), enc(base_tok, fa), enc(new_tok, fa)
    assert en_ids == enc(new_tok, en), "extended tokenizer re-tokenizes English"
    chars_fa, chars_en = sum(map(len, fa)), sum(map(len, en))
    print(f"{args.text}: Persian {len(fa)} docs, {chars_fa} chars, {sum(map(len, fa_base))} base tokens, "
          f"{sum(map(len, fa_new))} extended; English {len(en)} docs, {chars_en} chars", flush=True)
    base = AutoModelForCausalLM.from_pretrained(args.model).eval()
    n_base = len(base_tok)
    h_en = hidden_states(base, en_ids)
    w = base.get_output_embeddings().weight.float()
    rows = {"base": (score_hidden(hidden_states(base, fa_base), fa_base, w, n_base, chars_fa),
                     score_hidden(h_en, en_ids, w, n_base, chars_en))}
    del base
    runs = [("tied", args.model, m) for m in METHODS] + [("untied", work / "untied", m) for m in ("shrunk-subtokens", "random")]
    if args.methods:
        runs = [("tied", args.model, m) for m in args.methods.split(",")]
    for kind, model, method in runs:
        out = work / f"ext-{kind}-{method}"
        extend_model(model, work / "tok", out=out, init=method)
        ext = AutoModelForCausalLM.from_pretrained(out).eval()
        head = ext.get_output_embeddings().weight.float()
        rows[f"{method} ({kind})"] = (score_hidden(hidden_states(ext, fa_new), fa_new, head, n_base, chars_fa),
                                      score_hidden(h_en, en_ids, head, n_base, chars_en))
        print(real_line(f"{method} ({kind})", rows, "base"), flush=True)
        if args.align_steps and kind == "tied" and method in ("shrunk-subtokens", "mean-subtokens"):
            # old rows get no gradient and the transformer is frozen, so English hidden states stay the base's
            texts = [" ".join(article_texts(a)) for a in held_out_news(False)[:300]]
            align(ext, blocks(new_tok, texts), torch.arange(n_base, len(new_tok)), args.align_steps)
            head = ext.get_output_embeddings().weight.detach().float()
            name = f"{method} ({kind}) +{args.align_steps} align"
            rows[name] = (score_hidden(hidden_states(ext, fa_new), fa_new, head, n_base, chars_fa),
                          score_hidden(h_en, en_ids, head, n_base, chars_en))
            print(real_line(name, rows, "base"), flush=True)
        shutil.rmtree(out)
    print("\n| model | Persian bpc | × base | new-token mass (fa) | English bpc | × base | new-token mass (en) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in rows:
        print(real_line(name, rows, "base", markdown=True))
    ours, theirs = rows[next(k for k in rows if k != "base")][0]["bpc"], rows["base"][0]["bpc"]
    print(f"RESULT metric={ours:.4f} baseline={theirs:.4f} ratio={theirs / ours:.3f}")


def real_line(name: str, rows: dict, ref: str, markdown: bool = False) -> str:
    (fa, en), (rfa, ren) = rows[name], rows[ref]
    cells = [name, f"{fa['bpc']:.4f}", f"{fa['bpc'] / rfa['bpc']:.3f}", f"{fa['mass']:.3f}", f"{en['bpc']:.4f}",
             f"{en['bpc'] / ren['bpc']:.4f}", f"{en['mass']:.4f}"]
    return "| " + " | ".join(cells) + " |" if markdown else "  ".join(cells)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langgraft.model.extend import extend_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny base")
    ap.add_argument("--steps", type=int, default=600, help="training steps (batch 16 × 128 tokens) of the base")
    ap.add_argument("--align-steps", type=int, default=0, help="new-rows-only training steps after extension")
    ap.add_argument("--work", default=None)
    ap.add_argument("--model", default=None, help="a real HF base (real-base mode; module docstring)")
    ap.add_argument("--text", choices=["confirm", "tune"], default="confirm", help="real-base held-out text")
    ap.add_argument("--methods", default="", help="real-base mode: only these --init methods (comma list), tied only")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.model:
        return real_base(args)
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
    for method in ("shrunk-subtokens", "mean-subtokens", "random", "mean"):
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
