"""Which GGUF reader tokenizes an exported GGUF like the HF export: llama.cpp itself or transformers' GGUF reader.

The demo's tokenizers (its English SentencePiece base, the Persian pieces of its recipe: 600, trained on the demo
corpus) or a real base (`--base`), merged by `tokenizer extend`, on a tiny random Llama written by `write_gguf`.
Each reader tokenizes held-out Persian (NTREX, Varzesh3 sports news: many Persian digits) and English lines; a line agrees when its ids equal the HF export's.

    python bench/gguf_readers.py [--base PATH] [--pieces 600] [--lines 300] [--out DIR]

Ends with `RESULT metric=<llama.cpp lines agreeing> baseline=<transformers reader lines agreeing> ratio=<x>`.
Needs the gguf and xllamacpp packages (the test extra).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import urllib.request
from pathlib import Path

from benchdata import DATA, VARZESH3, news_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="", help="base tokenizer (default: the demo's, trained here)")
    parser.add_argument("--pieces", type=int, default=600, help="Persian SentencePiece size")
    parser.add_argument("--lines", type=int, default=300, help="lines per text set")
    parser.add_argument("--out", default="", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="gguf-readers-"))
    model = _export(root, args.base, args.pieces)
    texts = {"fa": _ntrex("ref.fas", args.lines), "fa-news": [t.strip() for t in news_texts(VARZESH3)[:args.lines]],
             "en": _ntrex("src.eng", args.lines)}

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
    reader = AutoTokenizer.from_pretrained(root, gguf_file="model.gguf", trust_remote_code=False)
    url, server = _serve(root / "model.gguf")
    agree = {"llama.cpp": 0, "transformers": 0}
    examples = []
    for lang, lines in texts.items():
        for line in lines:
            want = hf(line, add_special_tokens=False)["input_ids"]
            cpp = _post(url, "/tokenize", {"content": line, "add_special": False})["tokens"]
            tf = reader(line, add_special_tokens=False)["input_ids"]
            agree["llama.cpp"] += cpp == want
            agree["transformers"] += tf == want
            if tf != want and len(examples) < 3:
                examples.append((lang, line[:60], hf.convert_ids_to_tokens(want)[:12],
                                 reader.convert_ids_to_tokens(tf)[:12]))
    del server
    total = sum(map(len, texts.values()))
    print(f"lines: {total} ({', '.join(f'{k} {len(v)}' for k, v in texts.items())})")
    for name, n in agree.items():
        print(f"{name}: ids equal to the HF export on {n}/{total} lines")
    for example in examples:
        print("transformers reader differs:", example)
    ratio = agree["llama.cpp"] / max(agree["transformers"], 1)
    print(f"RESULT metric={agree['llama.cpp']} baseline={agree['transformers']} ratio={ratio:.3f}")


def _export(root: Path, base: str, pieces: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.demo import BASE, demo_file
    from langgraft.export.gguf import write_gguf
    from langgraft.model.extend import extend_model
    from langgraft.tokenizer.bases import load_base
    from langgraft.tokenizer.extend import extend_tokenizer
    from langgraft.tokenizer.train import train_tokenizer

    if not base:
        train_tokenizer([demo_file("en.txt")], lang="en", vocab_size=BASE["vocab_size"], out=root / "base-sp",
                        threads=1)
        base = str(root / "base-sp" / "sp.model")
    train_tokenizer([demo_file("fa.txt")], lang="fa", vocab_size=pieces, out=root / "fa-sp", threads=1)
    extend_tokenizer(base, root / "fa-sp", lang="fa", out=root / "tok")
    tok = load_base(base).hf
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    extend_model(root / "base", root / "tok", out=root / "model")
    write_gguf(root / "model", root / "model.gguf", gguf_type="f16")
    return root / "model"


def _ntrex(name: str, n: int) -> list[str]:
    path = DATA / f"ntrex/NTREX-128/newstest2019-{name}.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[-n:]  # the last lines: held out of everything the demo trains on


def _serve(gguf: Path):
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        params.port = sock.getsockname()[1]
    params.n_ctx, params.n_parallel, params.warmup = 256, 1, False
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    server = xllamacpp.Server(params)
    return server.listening_address, server


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


if __name__ == "__main__":
    main()
