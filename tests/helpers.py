"""Helpers the tests import: real text from ../shared/data, small texts from tests/assets, tiny random models,
extended-tokenizer dirs, datasets.

The extended tokenizer here is a real base tokenizer plus real Persian words added as tokens, with
`new_tokens.json` in the format `tokenizer extend` writes: quicker than training SentencePiece in every test that
only needs some new rows.
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import torch

from langgraft.formats.new_tokens import write_new_tokens

# Tiny models on a shared 2-core machine: intra-op threads only spin against each other (a 32×32 matmul takes
# milliseconds with 2 threads under load, microseconds with 1).
torch.set_num_threads(1)

TOKENIZERS = {
    "llama2": "tokenizers/llama2",
    "mistral": "tokenizers/mistral-7b-v0.3",
    "qwen2": "tokenizers/qwen2",
    "gpt2": "tokenizers/gpt2",
}


ROOT = Path(__file__).resolve().parents[1]  # the repository: recipes/, docs/, README.md
ASSETS = Path(__file__).resolve().parent / "assets"  # small texts written for the tests (tests/assets/README.md)
NEWS = "persian_news/exploring-datasets"
NEWS_FIELDS = ("title", "abstract", "paragraphs")


def news_articles(data_dir: Path, pattern: str = "news/fars-news-1.json", n: int | None = None) -> list[dict]:
    """The first `n` articles (as stored) of the Persian news files matching `pattern`, files in name order."""
    articles = []
    for path in sorted(glob.glob(str(data_dir / NEWS / pattern))):
        articles += json.loads(Path(path).read_text(encoding="utf-8"))
    return articles[:n]


def article_texts(article: dict, fields: tuple[str, ...] = NEWS_FIELDS) -> list[str]:
    """An article's `fields` in order, each paragraph its own text; a missing field gives nothing."""
    texts = []
    for field in fields:
        value = article.get(field) or []
        texts += value if isinstance(value, list) else [value]
    return texts


def news_texts(data_dir: Path, pattern: str = "news/fars-news-1.json", n: int | None = None,
               fields: tuple[str, ...] = NEWS_FIELDS) -> list[str]:
    """Non-blank `fields` of the first `n` news articles, in order (real Persian text of many lengths)."""
    return [t for a in news_articles(data_dir, pattern, n) for t in article_texts(a, fields) if t.strip()]


def persian_lines(data_dir: Path, n: int | None = 200) -> list[str]:
    """Real Persian sentences (NTREX reference translations), the first `n` (None: all 1,997)."""
    path = data_dir / "ntrex/NTREX-128/newstest2019-ref.fas.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()[:n] if line.strip()]


def english_lines(data_dir: Path, n: int | None = 200) -> list[str]:
    """The English sources of `persian_lines`, line for line."""
    path = data_dir / "ntrex/NTREX-128/newstest2019-src.eng.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()[:n] if line.strip()]


def asset_lines(lang: str, n: int | None = None) -> list[str]:
    """The first `n` lines of tests/assets/`lang`.txt (fa, en: 40 short sentences, line for line translations), for
    tests that need some text and not the real corpora of ../shared/data."""
    return (ASSETS / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:n]


def load_base_tokenizer(data_dir: Path, name: str, tmp: Path):
    from transformers import AutoTokenizer

    src = data_dir / TOKENIZERS[name]
    if name == "llama2":  # a bare SentencePiece model: give AutoTokenizer the class name it needs
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "tokenizer.model").write_bytes((src / "tokenizer.model").read_bytes())
        (tmp / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
        src = tmp
    return AutoTokenizer.from_pretrained(src)


def make_extended_tokenizer(data_dir: Path, name: str, out: Path, n_new: int = 40) -> Path:
    """Base tokenizer + the `n_new` most frequent Persian words (as added tokens) + new_tokens.json."""
    tok = load_base_tokenizer(data_dir, name, out.parent / f"{out.name}-base")
    base_size = len(tok)
    counts: dict[str, int] = {}
    for line in persian_lines(data_dir, 400):
        for word in re.findall(r"[\u0600-\u06FF]{3,}", line):
            counts[word] = counts.get(word, 0) + 1
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:n_new]
    base_ids = {w: tok(w, add_special_tokens=False)["input_ids"] for w in words}
    tok.add_tokens(words)
    tok.save_pretrained(out)
    tokens = [{"id": tok.convert_tokens_to_ids(w), "token": w, "text": w, "base_ids": base_ids[w]} for w in words]
    write_new_tokens(out, base_size, tokens, vocab_size=len(tok))
    return out


def tiny_config(kind: str, vocab_size: int, *, hidden: int = 32, layers: int = 2):
    """A tiny random config of the named family; `gemma` is tied, the others untied."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if kind == "llama":
        return tf.LlamaConfig(**common, tie_word_embeddings=False)
    if kind == "mistral":
        return tf.MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)
    if kind == "qwen2":
        return tf.Qwen2Config(**common, tie_word_embeddings=False)
    if kind == "gemma":
        return tf.GemmaConfig(**common, head_dim=hidden // 4, tie_word_embeddings=True)
    raise ValueError(kind)


def save_tiny_model(kind: str, tokenizer, out: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random tiny causal LM saved with its (base) tokenizer, like a hub checkpoint."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, len(tokenizer), hidden=hidden, layers=layers))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_dataset(root: Path, name: str, train: list[str], validation: list[str], *, kind: str = "monolingual",
                 lang: str = "fa") -> Path:
    """A prepared dataset in the layout `langgraft data prepare` writes, written with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = root / name
    splits = {}
    for split, texts in (("train", train), ("validation", validation)):
        if not texts:
            continue
        (ds / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": texts, "lang": [lang] * len(texts)}), ds / split / "part-00000.parquet")
        splits[split] = {"files": [f"{split}/part-00000.parquet"], "records": len(texts)}
    (ds / "dataset.json").write_text(json.dumps({"name": name, "kind": kind, "lang": lang, "splits": splits}))
    return ds


def make_extended_model(tmp: Path, data_dir: Path, kind: str = "llama", tok_name: str = "mistral",
                        n_new: int = 40, init: str = "mean-subtokens") -> Path:
    """base tokenizer → extended tokenizer → tiny random base model → `extend_model` output dir."""
    from langgraft.model.extend import extend_model

    tok_dir = make_extended_tokenizer(data_dir, tok_name, tmp / "tok", n_new=n_new)
    base = save_tiny_model(kind, load_base_tokenizer(data_dir, tok_name, tmp / "base-tok"), tmp / "base")
    extend_model(base, tok_dir, out=tmp / "extended", init=init)
    return tmp / "extended"


def tiny_run(tmp: Path, data_dir: Path, n_train: int, n_val: int, **raw):
    """Extended tiny Llama + Persian dataset + a TrainConfig (fp32, block 16, q/v LoRA) with `raw` on top."""
    return train_config(make_extended_model(tmp, data_dir, n_new=20), data_dir, tmp, n_train, n_val, **raw)


def train_config(model: Path, data_dir: Path, tmp: Path, n_train: int, n_val: int, *, dataset_name: str = "fa",
                 **raw):
    """A TrainConfig (fp32, block 16, q/v LoRA) on `model` and a Persian dataset made in tmp/data, `raw` on top."""
    from langgraft.config import from_dict
    from langgraft.train.config import TrainConfig

    fa = persian_lines(data_dir, n_train + n_val)
    ds = make_dataset(tmp / "data", dataset_name, fa[:n_train], fa[n_train:])
    base = {"model": str(model), "data": {"dataset": str(ds), "block_size": 16}, "micro_batch_size": 2,
            "precision": "fp32", "lora": {"targets": ["q_proj", "v_proj"]}}
    for key, value in raw.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return from_dict(TrainConfig, base)


def copy_without_chat_template(src: Path, dst: Path) -> Path:
    """A copy of a model dir whose tokenizer has no chat template (a base model's usual state)."""
    import shutil

    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst


PERSIAN_SOURCES = ("ntrex/NTREX-128/newstest2019-ref.fas.txt", "persian_news", "parsinlu", "persian_instruct")


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for item in value for s in _strings(item)] if isinstance(value, list) else []


def _file_lines(path: Path) -> list[str]:
    """Text lines of a .txt/.csv/.tsv file; every string value, split at newlines, of a .json or .jsonl file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        return [line for s in _strings(json.loads(text)) for line in s.splitlines()]
    if path.suffix == ".jsonl":
        return [line for row in text.splitlines() if row.strip() for s in _strings(_json_or_text(row))
                for line in s.splitlines()]
    return text.splitlines()


def _json_or_text(row: str):
    """A JSON Lines row, or the row itself where it is not JSON (ParsiNLU's reading comprehension .jsonl rows
    are Python reprs)."""
    try:
        return json.loads(row)
    except ValueError:
        return row


def all_persian_lines(data_dir: Path, sources: tuple[str, ...] = PERSIAN_SOURCES) -> dict[str, list[str]]:
    """Every distinct stripped line holding an Arabic-script character, per source (a file or a folder of
    .txt/.json/.jsonl/.csv/.tsv files under the data root), plus the demo's own Persian text as `demo`."""
    import langgraft.demo

    demo = Path(langgraft.demo.__file__).parent
    found: dict[str, list[str]] = {}
    for source in (*sources, "demo"):
        root = demo if source == "demo" else data_dir / source
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                      and p.suffix in (".txt", ".json", ".jsonl", ".csv", ".tsv"))
        if source == "demo":
            paths = [demo / "fa.txt", demo / "heldout_fa.jsonl", demo / "pairs.fa.txt", demo / "instructions_fa.jsonl"]
        lines = (line.strip() for p in paths for line in _file_lines(p))
        found[source] = list(dict.fromkeys(s for s in lines if re.search("[\u0600-\u06ff]", s)))
    return found


def descendants(pid: int) -> set[int]:
    """Every live descendant of process `pid` (Linux /proc), children of children included."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_parent_and_survivors(proc, children: set[int], seconds: float) -> list[int]:
    """SIGKILL `proc` alone (as an OOM killer would), wait up to `seconds` for `children` to die with it, SIGKILL
    and return those that did not."""
    import os
    import signal
    import time

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + seconds
    while time.time() < deadline and any(map(alive, children)):
        time.sleep(0.1)
    left = [p for p in children if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def hold_lock(out: Path):
    """A separate process that holds langgraft's output lock on `out` until it is killed (returned once it holds)."""
    import os
    import subprocess
    import sys

    code = ("import sys, time\nfrom langgraft.rundir import output_lock\nwith output_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc
