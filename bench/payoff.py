"""The payoff of grafting in the unit a user feels: Persian (and English) characters per second, grafted vs base.

Same process, same machine moment: the base SmolLM2-135M-Instruct and the same model extended by langgraft's own
tokenizer + model_extend stages (`langgraft run recipes/smollm2-135m-persian.yaml --to model_extend`, step 0: the
speed of a model does not depend on its training) are timed interleaved, round by round, on the same text.

Generation, made fair for an untrained graft: an untrained model's free-running output says nothing about speed (it
may stop early or ramble), so both models are made to *produce the same real text*: each text's tokens are fed one
decode step at a time through the KV cache after a one-token prompt, with the greedy argmax over the full head at
every step, exactly the work greedy decoding does per token. Characters/s = the text's characters / the time to
decode it in that model's own tokens (the grafted head is bigger: 66,688 rows vs 49,152, so each of its steps costs
a little more, and it needs fewer steps). Batch 1, as a chat user generates.
Scoring: `langgraft eval`'s own bits-per-character path (`eval.scoring.text_nll`, batch 8) over the same texts.

Text: held-out NTREX-128 news (Persian references and their English sources), never trained on by either model.

    nice -n 10 python bench/payoff.py [--grafted runs/smollm2-135m-persian/model_extend]
        [--base models/SmolLM2-135M-Instruct] [--texts 6] [--chars 200] [--score-texts 40] [--rounds 2] [--threads 2]

Last line: RESULT metric=<grafted Persian generation chars/s> baseline=<base chars/s> ratio=<grafted/base>.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchdata import DATA  # bench/ is on sys.path when run as a script

NTREX = {"fa": "ntrex/NTREX-128/newstest2019-ref.fas.txt", "en": "ntrex/NTREX-128/newstest2019-src.eng.txt"}


def texts(lang: str, n: int, chars: int, skip: int = 0) -> list[str]:
    lines = [x.strip() for x in (DATA / NTREX[lang]).read_text(encoding="utf-8").splitlines() if x.strip()]
    return [x[:chars] for x in lines[skip:skip + n]]


@torch.no_grad()
def forced_decode_seconds(model, tok, text: str) -> tuple[float, int]:
    """(seconds, steps) to decode `text` token by token through the KV cache after its first token."""
    ids = tok(text, add_special_tokens=False).input_ids
    past = None
    start = time.perf_counter()
    out = model(input_ids=torch.tensor([ids[:1]]), use_cache=True)
    past = out.past_key_values
    out.logits[:, -1].argmax(-1)
    for t in ids[1:]:
        out = model(input_ids=torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        out.logits[:, -1].argmax(-1)  # the greedy pick over the whole head, as generation does
    return time.perf_counter() - start, len(ids)


def generation_rate(model, tok, batch: list[str]) -> dict:
    seconds, steps = 0.0, 0
    for text in batch:
        s, n = forced_decode_seconds(model, tok, text)
        seconds, steps = seconds + s, steps + n
    chars = sum(map(len, batch))
    return {"chars_per_s": chars / seconds, "tokens_per_s": steps / seconds, "chars_per_token": chars / steps}


def scoring_rate(model, tok, batch: list[str]) -> dict:
    from langgraft.eval.scoring import text_nll

    start = time.perf_counter()
    nll = text_nll(model, tok, batch, batch_size=8)
    seconds = time.perf_counter() - start
    tokens = sum(k for _, k in nll)
    return {"chars_per_s": sum(map(len, batch)) / seconds, "tokens_per_s": tokens / seconds,
            "chars_per_token": sum(map(len, batch)) / tokens,
            "bpc": sum(n for n, _ in nll) / 0.6931471805599453 / sum(map(len, batch))}


def new_share(tok, new_ids: set[int], batch: list[str]) -> float:
    ids = [i for t in batch for i in tok(t, add_special_tokens=False).input_ids]
    return sum(i in new_ids for i in ids) / len(ids)


def main() -> None:
    from langgraft.eval.speed import new_token_ids
    from langgraft.model.load import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--grafted", default="runs/smollm2-135m-persian/model_extend")
    ap.add_argument("--base", default="models/SmolLM2-135M-Instruct")
    ap.add_argument("--texts", type=int, default=6, help="texts per language for generation")
    ap.add_argument("--chars", type=int, default=200, help="characters of each text")
    ap.add_argument("--score-texts", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {name: load_model(path, "cpu") for name, path in (("base", args.base), ("grafted", args.grafted))}
    new_ids = set(new_token_ids(args.grafted))
    print(f"base {args.base}: vocab {len(models['base'][1])}; grafted {args.grafted}: vocab "
          f"{len(models['grafted'][1])} ({len(new_ids)} new tokens); {torch.get_num_threads()} threads")
    results: dict = {}
    for lang in ("fa", "en"):
        gen, score = texts(lang, args.texts, args.chars), texts(lang, args.score_texts, 10_000, skip=100)
        for r in range(args.rounds):
            for name, (model, tok) in models.items():  # interleaved: the same load for both
                g, s = generation_rate(model, tok, gen), scoring_rate(model, tok, score)
                results.setdefault((lang, name), []).append((g, s))
                print(f"  round {r + 1} {lang} {name}: generation {g['chars_per_s']:.1f} chars/s "
                      f"({g['tokens_per_s']:.1f} tok/s, {g['chars_per_token']:.2f} chars/token); scoring "
                      f"{s['chars_per_s']:.0f} chars/s ({s['tokens_per_s']:.0f} tok/s), bpc {s['bpc']:.3f}",
                      flush=True)
        share = new_share(models["grafted"][1], new_ids, gen)
        print(f"{lang}: {100 * share:.1f}% of the grafted tokens of this text are new-vocabulary ids")
    summary = {}
    for (lang, name), rows in results.items():
        summary[(lang, name)] = {kind: statistics.median(row[k]["chars_per_s"] for row in rows)
                                 for k, kind in ((0, "gen"), (1, "score"))}
    for lang in ("fa", "en"):
        b, g = summary[(lang, "base")], summary[(lang, "grafted")]
        for kind, label in (("gen", "generation"), ("score", "scoring")):
            print(f"{lang} {label}: grafted {g[kind]:.1f} chars/s vs base {b[kind]:.1f} chars/s "
                  f"(median of {args.rounds} rounds): ratio {g[kind] / b[kind]:.2f}")
    b, g = summary[("fa", "base")]["gen"], summary[("fa", "grafted")]["gen"]
    print(f"RESULT metric={g:.1f} baseline={b:.1f} ratio={g / b:.2f}")


if __name__ == "__main__":
    main()
