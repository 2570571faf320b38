"""The model card (`README.md`) every `langgraft export` writes into its `model/` folder.

Hugging Face's model-card convention: a YAML header (base_model, language, license, library_name, tags, datasets)
and a markdown body. Everything in it is read from the run's own files, never typed in by hand: the manifests of
the training stages, the surgery and the tokenizer extension (followed upstream from the exported run through each
stage's parent), the prepared datasets' `dataset.json`, and — when the run is a `langgraft run` folder — its
evaluation results and tokenizer report. What a run did not measure is said to be missing, not filled in.

Written with plain string formatting: the header is a handful of flat keys, and huggingface_hub's ModelCard would
pull in Jinja templates and a hub client for the same few lines.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.metrics import fmt
from langgraft.formats.dataset_json import dataset_info, is_prepared
from langgraft.formats.results_json import read_results, results_path
from langgraft.formats.summary_json import read_summary
from langgraft.hub import is_hub_id
from langgraft.lang import ANCHOR, DEFAULT_TARGET
from langgraft.rundir import atomic_write_text, read_manifest
from langgraft.train.config import STAGES as TRAIN_STAGES

WHAT = {"align": "embeddings + head, transformer frozen", "pretrain": "LoRA + embeddings + head",
        "instruct": "LoRA + embeddings + head, assistant turns"}


def write_model_card(folder: str | Path, facts: dict, *, gguf: dict | None = None, name: str = "README.md") -> None:
    """Write `folder/README.md` from `gather(run)` of the exported training run (and the GGUF written, if any)."""
    atomic_write_text(Path(folder) / name, render({**facts, "gguf": gguf}))


def model_name(facts: dict) -> str:
    """A hub id as it is, a local folder by its name: the title should not carry someone's disk layout."""
    base = _base_name(facts)
    return f"{_public(base)} + {_lang(facts)}"


# ---------------------------------------------------------------- reading the run
def gather(run: Path, *, report: Path | None = None) -> dict:
    """Walk from a training run to its base: each stage's manifest names its parent model. `report`: the
    `langgraft run` report folder to take evaluations and fertility from (default: OUT/report, if written)."""
    facts: dict = {"trains": [], "extend": None, "tokenizer": None, "base": None, "base_gguf": None,
                   "datasets": [], "evals": None, "fertility": None, "gguf": None}
    node, seen = run, set()
    while str(node) not in seen:
        seen.add(str(node))
        manifest = _manifest(node)
        stage = (manifest or {}).get("stage")
        if stage in TRAIN_STAGES:
            facts["trains"].insert(0, manifest)
            node = Path(manifest["config"]["model"])
        elif stage == "export":
            node = Path(manifest["config"]["run"])
        elif stage == "extend":
            facts["extend"] = manifest
            facts["tokenizer"] = read_manifest(manifest["config"]["tokenizer"])
            node = Path(manifest["config"]["model"])
        elif stage == "import-gguf":
            facts["base"], facts["base_gguf"] = str(node), manifest["config"].get("gguf")
            break
        else:
            facts["base"] = str(node)
            break
    facts["datasets"] = [_dataset(t["config"]["data"]["dataset"]) for t in facts["trains"]]
    facts["base_license"] = _license(facts)
    facts["license"] = card_license(facts["base_license"], facts["datasets"])
    facts.update(_pipeline_results(run, report))
    return facts


def _manifest(node: Path) -> dict | None:
    """A stage's manifest; an export's model/ folder belongs to the export manifest one level up."""
    manifest = read_manifest(node) if node.is_dir() else None
    if manifest is None and node.name == "model" and node.parent.is_dir():
        manifest = read_manifest(node.parent)
    return manifest


def _dataset(path: str) -> dict:
    info = dataset_info(path) if is_prepared(path) else {}
    return {"path": path, "name": info.get("name") or Path(path).name, "kind": info.get("kind", "?"),
            "lang": info.get("lang", "?"), "licenses": info.get("licenses") or ["unknown"],
            "records": (info.get("splits", {}).get("train") or {}).get("records")}


def card_license(base: str | None, datasets: list[dict]) -> str | None:
    """The card's `license`: the weights derive from the base and from every training text, so the base's licence
    only when every dataset has that same one; else "other" (the body lists each, and says when one forbids
    commercial use, as ParsiNLU's CC BY-NC-SA does)."""
    data = {lic for d in datasets for lic in d["licenses"]}
    if not data or data == {base}:
        return base
    return "other"


def _license_line(facts: dict) -> str:
    base = facts.get("base_license") or "not recorded for the base"
    data = {}
    for d in facts["datasets"]:
        data.setdefault(d["name"], d["licenses"])
    if not data:
        return f"License: {base}.\n"
    listed = "; ".join(f"{name}: {', '.join(lics)}" for name, lics in data.items())
    line = f"License: the base model's is {base}; the training data's are {listed}."
    terms = [lic for lics in data.values() for lic in lics]
    if any("nc" in lic.lower().replace("-", " ").split() or "noncommercial" in lic.lower().replace("-", "")
           for lic in terms):
        line += " Some training data forbids commercial use (NC), so this model is for non-commercial use only."
    if any("unknown" in lic.lower() for lic in terms):
        line += " Some training data has no recorded licence: check it before you share this model."
    return line + "\n"


def _license(facts: dict) -> str | None:
    """The base's license where it is written down: a GGUF's general.license or the base card's YAML header."""
    if facts["base_gguf"] and Path(facts["base_gguf"]).is_file():
        from langgraft.ggufio.read import open_gguf

        try:
            field = open_gguf(facts["base_gguf"]).fields.get("general.license")
            if field is not None and field.data:
                return bytes(field.parts[field.data[0]]).decode("utf-8")
        except (UserError, UnicodeDecodeError):
            return None
    card = Path(facts["base"] or "") / "README.md"
    if card.is_file():
        head = card.read_text(encoding="utf-8").split("---")
        for line in (head[1] if len(head) > 2 else "").splitlines():
            if line.startswith("license:"):
                return line.split(":", 1)[1].strip() or None
    return None


def _pipeline_results(run: Path, report: Path | None) -> dict:
    """Evaluation and tokenizer numbers of a `langgraft run` folder (OUT/<stage>/train): the final report's
    comparison when it exists, else each evaluated point's own results."""
    out = run.parent.parent
    if run.name != "train" or not (out / "eval").is_dir():
        return {}
    found: dict = {}
    report = report or out / "report"
    points = sorted((d for d in (out / "eval").iterdir() if results_path(d).is_file()),
                    key=lambda d: results_path(d).stat().st_mtime)
    folders = [report / "eval"] if results_path(report / "eval").is_file() else points
    if folders:
        found["evals"] = [read_results(d, where="model card:") for d in folders]
    summary = read_summary(report)
    if summary is not None:
        found["fertility"] = summary.get("tokenizer", {}).get("fertility")
    return found


# ---------------------------------------------------------------- writing the card
def _lang(facts: dict) -> str:
    tok = facts["tokenizer"] or {}
    return (tok.get("summary") or {}).get("lang") or (tok.get("config") or {}).get("lang") or DEFAULT_TARGET


def render(facts: dict) -> str:
    tok = (facts["tokenizer"] or {}).get("summary") or {}
    lang = _lang(facts)
    base = _base_name(facts)
    tags = ["langgraft", "language-adaptation", "vocabulary-extension", lang] + \
        [t["stage"] for t in facts["trains"]] + (["gguf"] if facts["gguf"] else [])
    header = {"base_model": base if is_hub_id(base) else None, "language": [lang, ANCHOR],
              "license": facts["license"], "library_name": "transformers", "tags": tags,
              "datasets": sorted({d["name"] for d in facts["datasets"]})}
    stages = ", ".join(t["stage"] for t in facts["trains"]) or "none"
    gguf_name = Path(facts["base_gguf"]).name if facts["base_gguf"] else None
    parts = [_yaml(header), f"# {model_name(facts)}: vocabulary-extended and adapted with langgraft\n",
             f"Base model: `{_public(base)}`" + (f" (from the GGUF file `{gguf_name}`)" if gguf_name else "") + ".\n",
             _license_line(facts),
             "Method (Mahdizadeh Sani et al., COLING 2025): extend the tokenizer with target-language pieces, "
             "resize and initialise the new embedding rows, then train in stages. "
             f"Stages run: {stages}.\n",
             _tokenizer_section(facts, tok, lang), _stages_section(facts), _data_section(facts),
             _eval_section(facts), _files_section(facts)]
    return "\n".join(p for p in parts if p)


def _public(name: str) -> str:
    """A hub id as it is, a local folder by its last part: a card does not carry someone's disk layout."""
    return name if is_hub_id(name) else Path(name).name


def _base_name(facts: dict) -> str:
    extend = facts["extend"] or {}
    source = (extend.get("summary") or {}).get("source_model")
    return str(source or facts["base"] or "unknown")


def _yaml(header: dict) -> str:
    """The card's YAML header through huggingface_hub's own card data, as the hub reads it."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(**{key: value for key, value in header.items() if value not in (None, [])})
    return f"---\n{data.to_yaml()}\n---\n"


def _tokenizer_section(facts: dict, tok: dict, lang: str) -> str:
    if not tok:
        return "## Tokenizer\n\nNo `tokenizer extend` record upstream of this run.\n"
    extend = (facts["extend"] or {}).get("summary") or {}
    lines = ["## Tokenizer\n",
             f"- Base tokenizer ({tok.get('base_kind', '?')} BPE): {tok.get('base_vocab_size')} tokens → "
             f"{tok.get('vocab_size')} (+{tok.get('added')} {lang} pieces, {tok.get('new_merges')} new merges, "
             f"{tok.get('moved_base_merges')} base merges reordered).",
             f"- Guarantee: {tok.get('identity_guarantee', 'n/a')}."]
    if extend:
        lines.append(f"- Embedding rows: {extend.get('old_rows')} → {extend.get('padded_vocab_size')} "
                     f"(padded to a multiple of 64), new rows initialised with `{extend.get('init')}`.")
    if tok.get("examples"):
        lines.append("- First new pieces: " + " ".join(f"`{e}`" for e in tok["examples"][:10]))
    fert = facts.get("fertility")
    if fert:
        for text_lang, per in fert.items():
            lines.append(f"- Fertility (tokens per word) on held-out {text_lang}: base {per.get('base'):.3f} → "
                         f"extended {per.get('extended'):.3f}")
    else:
        lines.append("- Fertility before/after: not measured in this run (`langgraft run` reports it).")
    return "\n".join(lines) + "\n"


def _stages_section(facts: dict) -> str:
    if not facts["trains"]:
        return ""
    rows = ["## Training\n", "| stage | trains | dataset | steps | tokens | batch × block | learning rate | "
            "LoRA r/α | final loss | val bpc | wall time |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in facts["trains"]:
        c, s = t["config"], t.get("summary") or {}
        batch = c["micro_batch_size"] * c["grad_accum"] * s.get("world_size", 1)
        lora = "—" if t["stage"] == "align" else f"{c['lora']['r']}/{c['lora']['alpha']}"
        rows.append(f"| {t['stage']} | {WHAT[t['stage']]} ({c['rows']} rows) | {_dataset_name(c)} | "
                    f"{s.get('steps', '?')} | {s.get('tokens', '?')} | {batch} × {c['data']['block_size']} | "
                    f"{_learning_rates(t['stage'], c['optim'])} | {lora} | {_num(s.get('final_loss'))} | "
                    f"{_num(s.get('val_bpc'))} | {_num(t.get('wall_time_s'), 0)} s |")
    rows.append("\nval bpc: bits per character of the stage's last evaluation, on the validation split of the "
                "stage's own dataset (the dataset column), held out of its training; — where the stage ran no "
                "evaluation.")
    return "\n".join(rows) + "\n"


def _dataset_name(config: dict) -> str:
    return _dataset(config["data"]["dataset"])["name"]


def _learning_rates(stage: str, optim: dict) -> str:
    """The rates the optimiser really used (train.model.build_optimizer): embedding/head rows train at
    `embed_lr` (default `lr`), LoRA at `lr`; align trains rows only."""
    rows = optim.get("embed_lr") or optim["lr"]
    return f"rows {rows}" if stage == "align" else f"LoRA {optim['lr']}, rows {rows}"


def _data_section(facts: dict) -> str:
    if not facts["datasets"]:
        return ""
    rows = ["## Data\n", "| dataset | kind | language | training records |", "|---|---|---|---|"]
    for d in facts["datasets"]:
        records = d["records"] if d["records"] is not None else "?"
        rows.append(f"| {d['name']} | {d['kind']} | {d['lang']} | {records} |")
    return "\n".join(rows) + "\n"


def _eval_section(facts: dict) -> str:
    docs = facts.get("evals")
    if not docs:
        return "## Evaluation\n\nNo evaluation was recorded for this run.\n"
    models = [m for doc in docs for m in doc["models"]]
    rows = ["## Evaluation\n", "| task | lang | metric | n | " + " | ".join(models) + " |",
            "|---|---|---|---|" + "---|" * len(models)]
    tasks: dict = {}
    for doc in docs:
        tasks.update(doc["tasks"])
    for task, meta in tasks.items():
        metric = meta["metrics"][0]
        values = []
        for doc in docs:
            for m in doc["models"]:
                cell = doc["results"].get(m, {}).get(task, {}).get(metric)
                values.append(fmt(metric, cell["value"], unit=True) if cell else "—")
        rows.append(f"| {task} | {meta.get('lang', '?')} | {metric} | {meta.get('n', '?')} | "
                    + " | ".join(values) + " |")
    from langgraft.eval.speed import speed_markdown

    speed = [line.replace("## Text per second", "### Text per second") for doc in docs for line in speed_markdown(doc)]
    return "\n".join(rows) + "\n" + ("\n" + "\n".join(speed) if speed else "")


def _files_section(facts: dict) -> str:
    lines = ["## Files\n", "- `model.safetensors`, `config.json`, tokenizer files: load with "
             "`AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`."]
    g = facts.get("gguf")
    if g:
        lines.append(f"- `../{g['file']}`: GGUF ({g['type']}, {g['architecture']} architecture, {g['tokenizer']} "
                     f"tokenizer, pre-tokenizer `{g['pre_tokenizer']}`, {g['tokens']} tokens) for llama.cpp, "
                     "Ollama and LM Studio.")
    return "\n".join(lines) + "\n"


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
