"""`langgraft export --run DIR --out DIR`: a finished training run → a full HF checkpoint + a compact adapter.

`out/model/`   the stage's parent model with LoRA and the trained rows merged in (safetensors), plus the extended
               tokenizer: loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
`out/adapter/` the PEFT adapter (LoRA + trained rows only, megabytes): `PeftModel.from_pretrained(parent, DIR)`
               on the extended model from `langgraft extend` reproduces the same logits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from langgraft.errors import UserError
from langgraft.rundir import read_manifest, run_stage


def export_run(run: str | Path, *, out: str | Path) -> dict:
    run = Path(run)
    manifest = read_manifest(run)
    if manifest is None or not (run / "adapter" / "adapter_config.json").is_file():
        raise UserError(f"--run {run}: not a finished `langgraft train` run (no manifest.json or adapter/)")
    parent = manifest["config"]["model"]
    config = {"run": str(run), "parent": parent, "stage": manifest.get("stage")}

    def work(tmp: Path) -> dict:
        return _export(run, parent, tmp)

    return run_stage(out, stage="export", config=config, inputs=[run / "adapter"], work=work).manifest["summary"]


def _export(run: Path, parent: str, tmp: Path) -> dict:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from langgraft.surgery.resize import load_causal_lm

    base = load_causal_lm(parent)
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    try:
        model = PeftModel.from_pretrained(base, run / "adapter")
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"--run {run}: adapter does not load on {parent} ({str(exc).splitlines()[0]})") from None
    shutil.copytree(run / "adapter", tmp / "adapter")
    merged = model.merge_and_unload()
    if tied and merged.get_output_embeddings().weight is not merged.get_input_embeddings().weight:
        raise RuntimeError("merging untied a tied head")  # DESIGN: never untie silently
    merged.save_pretrained(tmp / "model")
    AutoTokenizer.from_pretrained(run / "adapter").save_pretrained(tmp / "model")
    # the next stage (rows=new) needs to know which rows are new: carry the surgery's record along
    for name in ("new_tokens.json", "extend_report.json"):
        if (Path(parent) / name).is_file():
            shutil.copy2(Path(parent) / name, tmp / "model" / name)
    return {"parent": parent, "tied": tied, "model_mb": _mb(tmp / "model"), "adapter_mb": _mb(tmp / "adapter")}


def _mb(path: Path) -> float:
    """Size of the weights (safetensors) only; the tokenizer files are the same few MB in both."""
    return round(sum(p.stat().st_size for p in path.glob("*.safetensors")) / 2**20, 3)
