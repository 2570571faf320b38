"""The one place langgraft calls transformers' and PEFT's loaders: nothing loaded runs code or asks a question.

A model, tokenizer or adapter folder can declare its own Python (`auto_map` in `config.json` or
`tokenizer_config.json`, `.py` files beside them). Left to itself transformers then asks "run the custom code?
[y/N]" on stdin, so a piped `y` runs the folder's code. Here every loader is called with
`trust_remote_code=False` (transformers then never prompts), weights come from safetensors only, and a local
folder that declares code is refused before anything loads, with one line naming the file and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from langgraft.errors import UserError

# JSON files transformers reads next to a model, tokenizer or processor, and the keys that point it at code
CODE_KEYS = {
    "config.json": ("auto_map", "custom_pipelines"),
    "tokenizer_config.json": ("auto_map",),
    "processor_config.json": ("auto_map",),
    "preprocessor_config.json": ("auto_map",),
    "feature_extractor_config.json": ("auto_map",),
    "image_processor_config.json": ("auto_map",),
    "video_preprocessor_config.json": ("auto_map",),
    "adapter_config.json": ("auto_map",),
}
NO_CODE = {"trust_remote_code": False}


def check_no_code(folder: str | Path, what: str = "--model", *, code_files: bool = True) -> None:
    """One UserError line when local `folder` carries code a loader could run (a `.py` file, or `auto_map` in
    one of the JSON files transformers reads); a hub id or a missing path passes (the loaders say the rest).
    `code_files=False` for the folder a GGUF file merely sits in: only its JSON declarations matter there."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    code = sorted(p.name for p in folder.iterdir() if p.suffix == ".py") if code_files else []
    if code:
        raise UserError(f"{what} {folder}: holds Python code ({code[0]}); langgraft never runs code from a model "
                        "folder, remove it to load the folder")
    for name, keys in CODE_KEYS.items():
        found = _declared(folder / name, keys)
        if found:
            raise UserError(f"{what} {folder / name}: `{found}` asks for the folder's own code; langgraft never "
                            "runs code from a model folder")


def _declared(path: Path, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` set in JSON file `path` (None when it is absent, unreadable or sets none)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not readable as config: the loader that reads it names it
    return next((k for k in keys if isinstance(data, dict) and data.get(k)), None)


def tokenizer(path: str | Path, what: str = "--model", **kwargs):
    """`AutoTokenizer.from_pretrained(path)` without code."""
    from transformers import AutoTokenizer

    check_no_code(path, what, code_files="gguf_file" not in kwargs)
    return AutoTokenizer.from_pretrained(str(path), **NO_CODE, **kwargs)


def config(path: str | Path, what: str = "--model", **kwargs):
    """`AutoConfig.from_pretrained(path)` without code."""
    from transformers import AutoConfig

    check_no_code(path, what, code_files="gguf_file" not in kwargs)
    return AutoConfig.from_pretrained(str(path), **NO_CODE, **kwargs)


def causal_lm(path: str | Path, what: str = "--model", **kwargs):
    """`AutoModelForCausalLM.from_pretrained(path)` without code, from safetensors only."""
    from transformers import AutoModelForCausalLM

    check_no_code(path, what, code_files="gguf_file" not in kwargs)
    safetensors = {} if "gguf_file" in kwargs else {"use_safetensors": True}
    return AutoModelForCausalLM.from_pretrained(str(path), **NO_CODE, **safetensors, **kwargs)


def peft_adapter(model, path: str | Path, what: str = "adapter"):
    """`PeftModel.from_pretrained(model, path)` without code, from `adapter_model.safetensors` only."""
    from peft import PeftModel

    check_no_code(path, what)
    if Path(path).is_dir() and not (Path(path) / "adapter_model.safetensors").is_file():
        raise UserError(f"{what} {path}: no adapter_model.safetensors (langgraft loads safetensors only, never a "
                        "pickled adapter_model.bin)")
    return PeftModel.from_pretrained(model, str(path))
