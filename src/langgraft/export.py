"""`langgraft export --run DIR --out DIR`: a finished training run → a full HF checkpoint + a compact adapter.

`out/model/`   the stage's parent model with LoRA and the trained rows merged in (safetensors), plus the extended
               tokenizer: loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
`out/adapter/` the PEFT adapter (LoRA + trained rows only, megabytes): `PeftModel.from_pretrained(parent, DIR)`
               on the extended model from `langgraft extend` reproduces the same logits.
`out/model.gguf` with `--gguf TYPE`: the merged model for llama.cpp / Ollama / LM Studio (ggufio.write.write_gguf),
               and `out/Modelfile` beside it for `ollama create` (ggufio.modelfile).
`out/model/README.md` the model card, generated from the run's own records (modelcard.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from langgraft.errors import UserError
from langgraft.rundir import input_identity, read_manifest, run_stage


def export_run(run: str | Path, *, out: str | Path, gguf: str | None = None) -> dict:
    """Merge training run `run` into `out`; `gguf` (f16, bf16, q8_0, f32) also writes `out/model.gguf` and
    `out/Modelfile`."""
    run = Path(run)
    manifest = read_manifest(run)
    if manifest is None or not (run / "adapter" / "adapter_config.json").is_file():
        raise UserError(f"--run {run}: not a finished `langgraft train` run (no manifest.json or adapter/)")
    parent = manifest["config"]["model"]
    # the parent's identity too: a parent rebuilt in place makes another merged model from the same adapter
    config = {"run": str(run), "parent": parent, "parent_identity": input_identity(parent),
              "stage": manifest.get("stage")}
    if gguf is not None:
        from langgraft.ggufio.write import check_gguf_writable

        if Path(parent).is_dir():  # before the merge: an unsupported model fails in a second
            check_gguf_writable(parent, gguf)
        config["gguf"] = gguf

    def work(tmp: Path) -> dict:
        return _export(run, parent, tmp, gguf)

    return run_stage(out, stage="export", config=config, inputs=[run / "adapter"], work=work).manifest["summary"]


def _export(run: Path, parent: str, tmp: Path, gguf: str | None) -> dict:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from langgraft.formats.new_tokens import copy_new_tokens
    from langgraft.model.load import load_causal_lm

    base = load_causal_lm(parent)
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    try:
        model = PeftModel.from_pretrained(base, run / "adapter")
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"--run {run}: adapter does not load on {parent} ({str(exc).splitlines()[0]})") from None
    shutil.copytree(run / "adapter", tmp / "adapter")
    merged = model.merge_and_unload()
    if tied and merged.get_output_embeddings().weight is not merged.get_input_embeddings().weight:
        # the config still says tied, so loading would tie the head back to the input rows and quietly drop the
        # merged head: the saved model would not be the one trained. Stop instead of writing it
        raise RuntimeError("merging untied a tied head")
    merged.save_pretrained(tmp / "model")
    AutoTokenizer.from_pretrained(run / "adapter").save_pretrained(tmp / "model")
    # the next stage (rows=new) needs to know which rows are new: carry the surgery's record along
    copy_new_tokens(parent, tmp / "model")
    if (Path(parent) / "extend_report.json").is_file():
        shutil.copy2(Path(parent) / "extend_report.json", tmp / "model" / "extend_report.json")
    summary = {"parent": parent, "tied": tied, "model_mb": _mb(tmp / "model"), "adapter_mb": _mb(tmp / "adapter")}
    from langgraft.modelcard import gather, model_name, write_model_card

    facts = gather(run)
    if gguf is not None:
        from langgraft.ggufio.write import write_gguf

        from langgraft.ggufio.modelfile import write_modelfile

        summary["gguf"] = write_gguf(tmp / "model", tmp / "model.gguf", gguf_type=gguf, name=model_name(facts))
        summary["modelfile"] = write_modelfile(tmp / "model", tmp, "model.gguf")
    write_model_card(tmp / "model", facts, gguf=summary.get("gguf"))
    return summary


def _mb(path: Path) -> float:
    """Size of the weights (safetensors) only; the tokenizer files are the same few MB in both."""
    return round(sum(p.stat().st_size for p in path.glob("*.safetensors")) / 2**20, 3)
