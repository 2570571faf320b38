"""`langgraft demo [--out DIR]`: the whole pipeline on CPU in a few minutes, offline, on text shipped here.

The corpus in this folder was written for the project (no dataset is copied): Persian paragraphs (`fa.txt`),
English paragraphs (`en.txt`), English–Persian sentence pairs (`pairs.en.txt`/`pairs.fa.txt`), held-out Persian
and English paragraphs for bits per character, and 16 short Persian reviews for a sentiment task.

The demo copies the corpus, `recipe.yaml` and `control.yaml` (the control arm: the base tokenizer, LoRA alone)
into DIR, builds a tiny English *base* in DIR/base/ (a SentencePiece BPE tokenizer trained on `en.txt`, and a
random 2-layer Llama briefly trained on the English text so that "English retention" means something), then
runs the recipe with `langgraft.pipeline.run.run_recipe`: Persian tokenizer → extend → data prepare → model
surgery → align → pretrain, evaluating after every model stage, and a report.
Everything is a normal run folder: rerunning skips what is done, and `langgraft run recipe.yaml` inside DIR works.
`langgraft demo` refreshes the shipped files it wrote but never a file you edited (`.demo.json` records what it
wrote); to experiment, edit DIR/corpus/ or DIR/recipe.yaml and use `langgraft run recipe.yaml` there (only the
stages whose inputs or settings changed run again). It refuses a non-empty DIR that is not a demo folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

from langgraft.lang import ANCHOR, display_name
from langgraft.rundir import run_stage

CORPUS = ("fa.txt", "en.txt", "pairs.en.txt", "pairs.fa.txt", "heldout_fa.jsonl", "heldout_en.jsonl",
          "sentiment_fa.jsonl", "instructions_fa.jsonl", "instructions_en.jsonl", "data.yaml", "task_bpc_fa.yaml", "task_bpc_en.yaml", "task_sentiment_fa.yaml")
# The base: small enough for seconds on one CPU core, big enough to learn something from a few KB. 40 steps:
# held-out English bpc 3.25 (80 steps: 3.61, 150: 5.1 — a 125k-parameter model memorises 3.6 KB quickly).
BASE = {"vocab_size": 400, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "block": 64, "batch": 8,
        "steps": 40, "lr": 3e-3, "seed": 0}


RECIPES = ("recipe.yaml", "control.yaml")  # the method, and its control arm on the base tokenizer
SHIPPED = ".demo.json"  # relative name -> sha256 of the shipped content the demo last wrote there


def demo_file(name: str) -> Path:
    return Path(str(resources.files("langgraft.demo") / name))


def run_demo(out: str | Path = "runs/demo", *, log=print) -> dict:
    """Materialise the demo folder and run its recipe; returns `run_recipe`'s result plus `cpu_s` and `wall_s`."""
    import torch

    from langgraft.pipeline.run import run_recipe

    # Tiny matrices: extra intra-op threads only contend (a 64x64 matmul is faster on one core than on two).
    torch.set_num_threads(1)
    _quiet_libraries()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    out = Path(out).expanduser().resolve()  # the base's manifest records paths: the same from any cwd
    _materialise(out, log)
    log(f"[0] base: tiny {display_name(ANCHOR)} tokenizer + 2-layer Llama → {out / 'base'}")
    build_base(out / "base", out / "corpus" / "en.txt")
    result = run_recipe(out / "recipe.yaml", base_dir=out, log=log)
    result.update(wall_s=round(time.perf_counter() - wall, 1), cpu_s=round(_cpu_seconds() - cpu, 1))
    return result


def _quiet_libraries() -> None:
    """A first-time user should see the stages, not a weight-loading bar per model and a library deprecation
    notice per training run; the stages' own progress lines stay."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data prepare's workers), user + system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _materialise(out: Path, log) -> None:
    """Copy the shipped corpus and recipe into `out`, leaving alone every file the user changed since."""
    import hashlib

    from langgraft.consolelog import own
    from langgraft.errors import UserError
    from langgraft.rundir import check_out, write_json
    from langgraft.textfiles import read_json_object

    record_path = out / SHIPPED
    check_out(out)
    # only .demo.json marks a demo folder: a project that merely has corpus/ and recipe.yaml is the user's
    if out.is_dir() and any(out.iterdir()) and not record_path.is_file():
        raise UserError(f"--out {out}: exists and is not a langgraft demo folder; pick a new or empty folder")
    own(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror})") from None
    record = read_json_object(record_path) if record_path.is_file() else {}
    files = {f"corpus/{name}": demo_file(name) for name in CORPUS} | {name: demo_file(name) for name in RECIPES}
    for rel, src in files.items():
        dst, data = out / rel, src.read_bytes()
        if dst.is_file():
            have = dst.read_bytes()
            if have == data:
                record[rel] = hashlib.sha256(data).hexdigest()
                continue
            if record.get(rel) != hashlib.sha256(have).hexdigest():
                log(f"keeping your edited {dst} (delete it to get the shipped one back)")
                continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)  # copies only when the content differs: reruns keep what was built from it
        record[rel] = hashlib.sha256(data).hexdigest()
    write_json(record_path, record)


def build_base(out: Path, english: Path) -> Path:
    """An HF model dir holding a SentencePiece BPE tokenizer and a tiny Llama trained briefly on `english`."""

    def work(tmp: Path) -> dict:
        return _build_base(tmp, english)

    run_stage(out, stage="demo-base", config=BASE, inputs=[english], work=work)
    return out


def _build_base(tmp: Path, english: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft import safeload
    from langgraft.tokenizer.bases import load_base
    from langgraft.tokenizer.train import train_tokenizer

    with tempfile.TemporaryDirectory() as sp_dir:
        sp = train_tokenizer([english], lang=ANCHOR, vocab_size=BASE["vocab_size"], out=Path(sp_dir) / "sp",
                             threads=1)
        load_base(sp.path / "sp.model").hf.save_pretrained(tmp)
        shutil.copyfile(sp.path / "sp.model", tmp / "tokenizer.model")  # SentencePiece bases ship it; extend rewrites it
    tok = safeload.tokenizer(tmp, "demo")
    torch.manual_seed(BASE["seed"])
    config = LlamaConfig(vocab_size=len(tok), hidden_size=BASE["hidden"], intermediate_size=2 * BASE["hidden"],
                         num_hidden_layers=BASE["layers"], num_attention_heads=BASE["heads"],
                         num_key_value_heads=BASE["kv_heads"], max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    loss = _pretrain_english(model, tok, english.read_text(encoding="utf-8").splitlines())
    model.save_pretrained(tmp)
    return {"vocab_size": len(tok), "parameters": sum(p.numel() for p in model.parameters()),
            "english_train_loss": round(loss, 4)}


def _pretrain_english(model, tok, lines: list[str]) -> float:
    """A few full-parameter steps on the English text: a base that has seen English, like a real one."""
    import torch

    ids = [i for line in lines if line.strip() for i in tok(line)["input_ids"] + [tok.eos_token_id]]
    block = BASE["block"]
    blocks = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)
    generator = torch.Generator().manual_seed(BASE["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=BASE["lr"])
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(BASE["steps"]):
        batch = blocks[torch.randint(len(blocks), (BASE["batch"],), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return loss.item()
