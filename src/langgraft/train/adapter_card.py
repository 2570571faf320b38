"""The README.md of a training run's `adapter/`: which base model it needs and where that base came from, so the
adapter is usable by someone who did not train it (`export` copies it along with the adapter)."""

from __future__ import annotations

from pathlib import Path

from langgraft.formats.extend_report import source_model
from langgraft.hub import is_hub_id


def write_adapter_card(adapter: Path, base: str, stage: str) -> None:
    """Write `adapter/README.md`: `base` is the absolute path the adapter config records; the card names it and,
    for an extended model, the model it was extended from (a hub id becomes the `base_model` header)."""
    source = source_model(base)
    hub_id = next((m for m in (source, base) if is_hub_id(m)), None)  # the extended model's origin, or the base
    front = f"---\nbase_model: {hub_id}\nlibrary_name: peft\n---\n" if hub_id else "---\nlibrary_name: peft\n---\n"
    origin = (f"It is `langgraft extend` of `{source}` (the new rows appended, the tokenizer in this folder); the "
              "original model alone does not fit this adapter: its vocabulary is smaller.\n") if source else ""
    text = (f"{front}# langgraft {stage} adapter\n\nBase model: `{base}` (recorded as `base_model_name_or_path` "
            "in adapter_config.json).\n" + origin +
            "\nLoad it from any working directory while the base stays where it is:\n\n```python\n"
            "from peft import AutoPeftModelForCausalLM\n"
            "model = AutoPeftModelForCausalLM.from_pretrained(ADAPTER_DIR)\n```\n\n"
            "If the base moved, load it yourself and apply the adapter:\n\n```python\n"
            "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
            "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE_DIR), ADAPTER_DIR)\n```\n")
    (adapter / "README.md").write_text(text, encoding="utf-8")
