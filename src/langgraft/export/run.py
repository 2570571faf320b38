"""`langgraft export --run DIR --out DIR`: a finished training run → a full HF checkpoint + a compact adapter.
`--checkpoint step-N` exports one of the run's checkpoints instead (each holds its weights as a PEFT adapter/).

`out/model/`   the stage's parent model with LoRA and the trained rows merged in (safetensors), plus the extended
               tokenizer: loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
`out/adapter/` the PEFT adapter (LoRA + trained rows only, megabytes): `PeftModel.from_pretrained(parent, DIR)`
               on the extended model from `langgraft extend` reproduces the same logits.
`out/model.gguf` with `--gguf TYPE`: the merged model for llama.cpp / Ollama / LM Studio (gguf.write_gguf),
               and `out/Modelfile` beside it for `ollama create` (modelfile.py).
`out/model/README.md` the model card, generated from the run's own records (modelcard.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from langgraft.config import from_dict, to_dict
from langgraft.errors import UserError
from langgraft.options import option, settings as settings_of
from langgraft.rundir import StageResult, check_out, input_identity, read_manifest, run_stage
from langgraft.rundir.training import read_train_config


GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_0", "f32")


@dataclass
class ExportOptions:
    """What `export` may be told beyond its run and output: the source of its flags."""

    # export that checkpoint of the run (step-N or N; also while the run still trains)
    checkpoint: Optional[str] = option(None, metavar="step-N")
    gguf: bool = False  # also write model.gguf for llama.cpp / Ollama / LM Studio
    gguf_type: Optional[Literal[GGUF_TYPES]] = None  # GGML type of the GGUF's matrices (default f16; implies --gguf)
    # the hub id the adapter's base (the extended model) is published under: recorded as the adapter's base
    # instead of the local path
    base_id: Optional[str] = option(None, metavar="HUB_ID")
    # upload the export to this hub model repo (model/ at its root, adapter/ as a subfolder, model.gguf); needs a
    # token (`hf auth login` or HF_TOKEN)
    push_to_hub: Optional[str] = option(None, metavar="REPO", fingerprint=False)
    private: bool = option(False, fingerprint=False)  # with --push-to-hub: create the repo private


def export_run(run: str | Path, *, out: str | Path, opts: ExportOptions | None = None, force: bool = False,
               **settings: Any) -> StageResult:
    """Merge training run `run` into `out` (model/, adapter/, and with `gguf`/`gguf_type` model.gguf and a
    Modelfile). `settings`: fields of `ExportOptions`, over `opts`; `push_to_hub` is done by `push_export`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    opts = from_dict(ExportOptions, {**to_dict(opts or ExportOptions()), **settings}, source="export")
    gguf = opts.gguf_type or ("f16" if opts.gguf else None)
    checkpoint, base_id = opts.checkpoint, opts.base_id
    run = Path(run)
    if base_id is not None:
        try:
            validate_repo_id(base_id)
        except HFValidationError:
            raise UserError(f"--base-id {base_id}: not a hub id (owner/name)") from None
    adapter, parent, stage = _adapter_of(run, checkpoint)
    check_out(out, [parent] if Path(parent).exists() else [])  # never the model the run was trained on
    # the parent's identity too: a parent rebuilt in place makes another merged model from the same adapter
    config = {"run": str(run), "parent": parent, "parent_identity": input_identity(parent), "stage": stage,
              **settings_of(opts), "gguf": gguf}
    if checkpoint is not None:
        config["checkpoint"] = adapter.parent.name
    if gguf is not None:
        from langgraft.export.gguf import check_gguf_writable

        if Path(parent).is_dir():  # before the merge: an unsupported model fails in a second
            check_gguf_writable(parent, gguf)

    def work(tmp: Path) -> dict:
        summary = _export(run, adapter, parent, tmp, gguf)
        if base_id is not None:
            _record_hub_base(tmp / "adapter", base_id, stage or "")
        return summary

    return run_stage(out, stage="export", config=config, inputs=[adapter], work=work, force=force)


def _adapter_of(run: Path, checkpoint: str | None) -> tuple[Path, str, str | None]:
    """(adapter folder, parent model, stage) of a finished run, or of one of its checkpoints."""
    import json

    from langgraft.train.checkpoint import ADAPTER, PREFIX, list_checkpoints

    manifest = read_manifest(run)
    if checkpoint is None:
        if manifest is None or not (run / "adapter" / "adapter_config.json").is_file():
            raise UserError(f"--run {run}: not a finished `langgraft train` run (no manifest.json or adapter/); "
                            "--checkpoint step-N exports one of its checkpoints")
        return run / "adapter", manifest["config"]["model"], manifest.get("stage")
    found = {int(p.name[len(PREFIX):]): p for p in list_checkpoints(run / "checkpoints")
             if p.name[len(PREFIX):].isdigit()}
    step = checkpoint.removeprefix(PREFIX)
    if not step.isdigit() or int(step) not in found:
        have = ", ".join(f"{PREFIX}{n}" for n in sorted(found)) or "none"
        raise UserError(f"--checkpoint {checkpoint}: not a checkpoint of {run} (checkpoints: {have})")
    name = int(step)
    adapter = found[name] / ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--checkpoint {checkpoint}: {found[name]} holds no {ADAPTER}/ (written by an older "
                        "langgraft); resume the run to write a new one")
    saved = read_train_config(run) or (manifest or {}).get("config", {})
    parent = saved.get("model") or json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    return adapter, parent, saved.get("stage")


def _export(run: Path, adapter: Path, parent: str, tmp: Path, gguf: str | None) -> dict:
    from langgraft import safeload
    from langgraft.formats.extend_report import copy_extend_report
    from langgraft.formats.new_tokens import copy_new_tokens
    from langgraft.model.load import load_causal_lm

    base = load_causal_lm(parent)
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    try:
        model = safeload.peft_adapter(base, adapter, "--run")
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"--run {run}: adapter does not load on {parent} ({str(exc).splitlines()[0]})") from None
    shutil.copytree(adapter, tmp / "adapter")
    merged = model.merge_and_unload()
    if tied and merged.get_output_embeddings().weight is not merged.get_input_embeddings().weight:
        # the config still says tied, so loading would tie the head back to the input rows and quietly drop the
        # merged head: the saved model would not be the one trained. Stop instead of writing it
        raise RuntimeError("merging untied a tied head")
    merged.save_pretrained(tmp / "model")
    safeload.tokenizer(adapter, "--run").save_pretrained(tmp / "model")
    # the next stage (rows=new) needs to know which rows are new: carry the surgery's record along
    copy_new_tokens(parent, tmp / "model")
    copy_extend_report(parent, tmp / "model")
    summary = {"parent": parent, "tied": tied, "model_mb": _mb(tmp / "model"), "adapter_mb": _mb(tmp / "adapter")}
    from langgraft.export.modelcard import gather, model_name, write_model_card

    facts = gather(run if read_manifest(run) is not None else Path(parent))  # a running run: from its parent on
    if gguf is not None:
        from langgraft.export.gguf import write_gguf

        from langgraft.export.modelfile import write_modelfile

        summary["gguf"] = write_gguf(tmp / "model", tmp / "model.gguf", gguf_type=gguf, name=model_name(facts))
        summary["modelfile"] = write_modelfile(tmp / "model", tmp, "model.gguf")
    write_model_card(tmp / "model", facts, gguf=summary.get("gguf"))
    return summary


def _record_hub_base(adapter: Path, base_id: str, stage: str) -> None:
    """The adapter names its base by hub id (PEFT's `base_model_name_or_path`, the card's `base_model`), so it
    loads for anyone who can reach the hub, not only on this machine."""
    import json

    from langgraft.train.adapter_card import write_adapter_card

    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_id
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_adapter_card(adapter, base_id, stage)


def push_export(out: str | Path, repo: str, *, private: bool = False, endpoint: str | None = None,
                token: str | None = None) -> dict:
    """Upload an export to the hub in one commit: `model/` at the repo's root (so `from_pretrained(REPO)` loads
    it and its README.md is the repo's card), `adapter/` as the `adapter` subfolder, `model.gguf` at the root.
    The manifest and log stay here: they hold this machine's paths."""
    from huggingface_hub import CommitOperationAdd, HfApi

    out = Path(out)
    files = [(p, p.relative_to(out / "model").as_posix()) for p in sorted((out / "model").rglob("*")) if p.is_file()]
    files += [(p, p.relative_to(out).as_posix()) for p in sorted((out / "adapter").rglob("*")) if p.is_file()]
    files += [(p, p.name) for p in sorted(out.glob("*.gguf"))]
    if not files:
        raise UserError(f"--push-to-hub: {out} holds no export (model/, adapter/)")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        commit = api.create_commit(repo, [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                                          for path, name in files],
                                   commit_message=f"langgraft export ({len(files)} files)")
    except Exception as exc:  # noqa: BLE001 - network, auth and hub refusals are all the user's to act on
        raise UserError(f"--push-to-hub {repo}: {' '.join(str(exc).split())[:300]}") from None
    return {"repo": str(url), "commit": commit.oid, "files": [name for _, name in files]}


def _mb(path: Path) -> float:
    """Size of the weights (safetensors) only; the tokenizer files are the same few MB in both."""
    return round(sum(p.stat().st_size for p in path.glob("*.safetensors")) / 2**20, 3)
