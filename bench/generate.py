"""Generation throughput: `langgraft.model.generation` batched by length (KV cache, left padding, batches of 16) vs the
same greedy decoding one prompt at a time, on the same model and 64 prompts; the outputs must be identical.

Model: a random Llama-style decoder with the real Mistral-7B-v0.3 tokenizer (32,768 tokens; hidden 256, 4 layers,
8 heads / 4 KV heads, ~20M parameters: large enough that the matrix products, not Python, are most of a step on
a CPU). Prompts: 32 Persian and 32 English sentences of NTREX-128 (../shared/data), each continued for
`--new-tokens` tokens (greedy, repetition penalty 1.1). One torch thread: the machine is shared.

    python bench/generate.py [--new-tokens 32] [--batch 16] [--prompts 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchdata import DATA  # bench/ is on sys.path when run as a script


def prompts(n: int) -> list[str]:
    ntrex = DATA / "ntrex/NTREX-128"
    fa = (ntrex / "newstest2019-ref.fas.txt").read_text(encoding="utf-8").splitlines()
    en = (ntrex / "newstest2019-src.eng.txt").read_text(encoding="utf-8").splitlines()
    out = []
    for i in range(n):  # alternate languages; lines far apart so lengths vary as in real use
        out.append((fa if i % 2 else en)[7 * i].strip())
    return out


def build_model(out: Path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(DATA / "tokenizers" / "mistral-7b-v0.3")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    import torch

    from langgraft.model.generation import Sampling, generate_texts
    from langgraft.model.load import load_model_or_adapter as load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = load(str(build_model(Path(tmp) / "model")), "cpu")
    n_params = sum(p.numel() for p in model.parameters())
    s = Sampling(max_new_tokens=args.new_tokens)
    generate_texts(model, tok, texts[:2], s, batch_size=2)  # warm-up (allocator, first-call paths)
    t0 = time.perf_counter()
    batched = generate_texts(model, tok, texts, s, batch_size=args.batch)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [generate_texts(model, tok, [p], s)[0] for p in texts]
    t_alone = time.perf_counter() - t0
    tokens = sum(r["new_tokens"] for r in batched)
    same = sum(a == b for a, b in zip(batched, alone))
    ours, base = tokens / t_batched, sum(r["new_tokens"] for r in alone) / t_alone
    prompt_tokens = [r["context_tokens"] for r in batched]
    print(f"model {n_params / 1e6:.1f}M parameters, {len(texts)} prompts ({min(prompt_tokens)}–{max(prompt_tokens)} "
          f"tokens), {args.new_tokens} new tokens each; load {os.getloadavg()[0]:.1f}")
    print(f"batched (batches of {args.batch}): {t_batched:.1f} s, {ours:.1f} tokens/s")
    print(f"one prompt at a time: {t_alone:.1f} s, {base:.1f} tokens/s")
    print(f"identical outputs: {same}/{len(texts)}")
    print(f"RESULT metric={ours:.1f} baseline={base:.1f} ratio={ours / base:.2f}")
    if same != len(texts):
        sys.exit("batched greedy outputs differ from one-at-a-time outputs")


if __name__ == "__main__":
    main()
