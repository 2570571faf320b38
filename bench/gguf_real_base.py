"""GGUF export on the real SmolLM2-135M-Instruct base: does the extended tokenizer and the model survive?

Not a CI test (the base is a 98 MB download-free wheel file, and this takes minutes on CPU). Steps, each through
the same Python API its verb uses: a Persian SentencePiece (2,000 pieces, NTREX Persian) → `tokenizer extend` of
SmolLM2's byte-level tokenizer → `extend` (mean-subtokens) → a very short `train --stage instruct` (Persian and
English seed tasks) → `export --gguf`. Then the GGUF is loaded back with transformers (`gguf_file=`) and compared
with the HF export: token ids on Persian and English text, and the greedy reply to a Persian and an English chat
prompt. With `--llama-cpp PYTHON` (a Python with llama-cpp-python installed) the GGUF's tokenization is also
compared in llama.cpp itself.

    python bench/gguf_real_base.py --base /root/models/smollm2-hf --out /tmp/gguf-real [--llama-cpp /venv/bin/python]

Ends with `RESULT metric=<checks passed> baseline=<checks run> ratio=<passed/run>` (1.0 = everything matched).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from benchdata import DATA  # bench/ is on sys.path when run as a script
PROMPTS = {"fa": "پایتخت ایران کجاست؟ در یک جمله پاسخ بده.",
           "en": "What is the capital of France? Answer in one sentence."}


def build(base: Path, out: Path) -> Path:
    """tokenizer train → tokenizer extend → extend → train instruct → export --gguf; returns the export dir."""
    import yaml

    from langgraft.config import from_dict, load_config
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare
    from langgraft.export.run import export_run
    from langgraft.model.extend import extend_model
    from langgraft.train.config import TrainConfig
    from langgraft.train.stages import train
    from langgraft.tokenizer.extend import extend_tokenizer
    from langgraft.tokenizer.train import train_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    fa = DATA / "ntrex/NTREX-128/newstest2019-ref.fas.txt"
    train_tokenizer([fa], lang="fa", vocab_size=2000, out=out / "sp", threads=1)
    extend_tokenizer(base, out / "sp", lang="fa", out=out / "tok")
    extend_model(base, out / "tok", out=out / "ext")
    cfg = {"root": str(out), "workers": 1, "datasets": [{
        "name": "inst", "kind": "instructions", "lang": "fa", "validation_fraction": 0.1,
        "filters": {"min_chars": 5, "min_words": 1, "min_script_ratio": 0.3},
        "sources": [{"path": str(DATA / "persian_instruct/persian_seed_tasks.jsonl"), "records": "instances",
                     "limit": 60},
                    {"path": str(DATA / "self_instruct/data/seed_tasks.jsonl"), "records": "instances",
                     "lang": "en", "limit": 20}]}]}
    (out / "prep.yaml").write_text(yaml.safe_dump(cfg))
    prepare(load_config(PrepareConfig, out / "prep.yaml"), out / "data", progress=False)
    train_cfg = from_dict(TrainConfig, {
        "model": str(out / "ext"), "data": {"dataset": str(out / "data" / "inst"), "block_size": 128},
        "micro_batch_size": 2, "max_steps": 2, "checkpoint_every": 0, "eval_every": 0, "precision": "fp32",
        "optim": {"lr": 1e-4}})
    train("instruct", train_cfg, out=out / "train")
    export_run(out / "train", out=out / "export", gguf_type="f16")
    return out / "export"


def reply(model, tok, prompt: str) -> str:
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=40, do_sample=False, repetition_penalty=1.0)
    return tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)


def compare(export: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(export / "model")
    gg_tok = AutoTokenizer.from_pretrained(export, gguf_file="model.gguf")
    texts = [line for line in (DATA / "ntrex/NTREX-128/newstest2019-ref.fas.txt").read_text().splitlines()[1500:1520]]
    texts += [line for line in (DATA / "ntrex/NTREX-128/newstest2019-src.eng.txt").read_text().splitlines()[1500:1520]]
    texts += [hf_tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
              for p in PROMPTS.values()]  # the chat format's special tokens must stay whole
    same_ids = sum(hf_tok(t)["input_ids"] == gg_tok(t)["input_ids"] for t in texts)
    hf = AutoModelForCausalLM.from_pretrained(export / "model", dtype=torch.float32).eval()
    gg = AutoModelForCausalLM.from_pretrained(export, gguf_file="model.gguf", dtype=torch.float32).eval()
    replies = {lang: {"hf": reply(hf, hf_tok, p), "gguf": reply(gg, gg_tok, p)} for lang, p in PROMPTS.items()}
    return {"texts": len(texts), "same_ids": int(same_ids), "replies": replies, "all_texts": texts}


LLAMA_CPP = """
import json, sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
texts = json.load(open(sys.argv[2]))
print(json.dumps([llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]))
"""


def llama_cpp_ids(python: str, export: Path, texts: list[str], hf_tok) -> dict:
    (export.parent / "texts.json").write_text(json.dumps(texts, ensure_ascii=False))
    done = subprocess.run([python, "-c", LLAMA_CPP, str(export / "model.gguf"), str(export.parent / "texts.json")],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    ids = json.loads(done.stdout)
    same = sum(a == hf_tok(t, add_special_tokens=False)["input_ids"] for a, t in zip(ids, texts))
    return {"texts": len(texts), "same_ids": same}


def main() -> None:
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="SmolLM2 HF folder (langgraft import-gguf of the wheel's GGUF)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--llama-cpp", default=None, metavar="PYTHON", help="a Python with llama-cpp-python")
    args = ap.parse_args()
    export = build(Path(args.base), Path(args.out))
    result = compare(export)
    checks = [result["same_ids"] == result["texts"]]
    checks += [r["hf"] == r["gguf"] for r in result["replies"].values()]
    if args.llama_cpp:
        result["llama_cpp"] = llama_cpp_ids(args.llama_cpp, export, result["all_texts"],
                                            AutoTokenizer.from_pretrained(export / "model"))
        checks.append(result["llama_cpp"].get("same_ids") == result["texts"])
    result.pop("all_texts")
    result["gguf"] = json.loads((export / "manifest.json").read_text())["summary"]["gguf"]
    (Path(args.out) / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"RESULT metric={sum(checks)} baseline={len(checks)} ratio={sum(checks) / len(checks):.3f}")


if __name__ == "__main__":
    sys.exit(main())
