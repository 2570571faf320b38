"""Loading models and tokenizers, the one way every verb does it, and a tokenizer's chat template.

Weights load from safetensors only and never with model-supplied Python: every HF loader call goes through
`langgraft.safeload`, which refuses a folder that declares its own code and never prompts. Every name is
resolved by `hub.resolve_model` first (a local folder or a hub id), and every loader failure is one UserError
line naming the model.

- `load_causal_lm`: the weights to change (surgery, training, export): CPU, no tokenizer, not in eval mode.
- `load_model`: a model and its tokenizer for inference (eval), in eval mode on a device.
- `load_model_or_adapter`: `load_model`, or a PEFT adapter dir on top of its base, merged in memory for speed
  (chat, generate).
- `own_tokenizer`: a model's own tokenizer, or None when its folder has none.
- `chat_text` / `chat_prompt`: a conversation in the tokenizer's chat template, ready for the reply.
"""

from __future__ import annotations

from pathlib import Path

from langgraft import safeload
from langgraft.errors import UserError
from langgraft.hub import resolve_model
from langgraft.textfiles import read_json_object


def _first_line(exc: Exception) -> str:
    """The error as one line: its lines joined (a loader's message often goes on past its first line, which alone
    ends mid-sentence, e.g. the tokenizer's "Couldn't instantiate the backend tokenizer from one of:")."""
    text = " ".join(str(exc).split())
    return (text[:600] + " …" if len(text) > 600 else text) or type(exc).__name__


def load_causal_lm(model: str, *, dtype="auto"):
    """An HF causal LM's weights; a non-causal-LM config is a one-line UserError."""
    from safetensors import SafetensorError

    model = resolve_model(model)
    try:
        cfg = safeload.config(model)
    except (OSError, ValueError) as exc:
        raise UserError(f"--model {model}: cannot load a model config ({_first_line(exc)})") from None
    try:
        return safeload.causal_lm(model, config=cfg, dtype=dtype)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise UserError(f"--model {model}: {type(cfg).__name__} is not a causal language model") from None
        raise
    except OSError as exc:
        raise UserError(f"--model {model}: {_first_line(exc)}") from None
    except SafetensorError as exc:  # a damaged weights file: cut short, or a header that is not one
        raise UserError(f"--model {model}: damaged safetensors file ({_first_line(exc)})") from None


def own_tokenizer(model: str):
    """The model's own tokenizer, or None when its folder (or hub repo) has none."""
    safeload.check_no_code(model)  # a refusal, not "no tokenizer"
    try:
        return safeload.tokenizer(model)
    except (OSError, ValueError, TypeError):
        return None


def load_model(path: str, device: str | None):
    """(model, tokenizer) in eval mode: bf16 on cuda, fp32 on cpu (`device` None: cuda when there is one, a
    launched rank's own GPU under a launcher). `device` "auto": the layers spread over every GPU (then CPU RAM)
    by accelerate's `device_map="auto"`, for a model larger than one device."""
    import os

    import torch

    path = resolve_model(path, flag="cannot load model")
    safeload.check_no_code(path)
    if device == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--device auto spreads one model over every device of the machine; under a launcher each "
                        "rank holds its own copy: run without the launcher (or name a device)")
    device = device or _rank_device()
    dtype = torch.bfloat16 if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) \
        else torch.float32
    try:
        tok = safeload.tokenizer(path)
        model = safeload.causal_lm(path, dtype=dtype, device_map=device).eval()
    except Exception as exc:  # noqa: BLE001 - any loader failure is the user's path/model problem
        raise UserError(f"cannot load model {path}: {_first_line(exc)}") from None
    _ensure_pad(tok)
    return model, tok


def _rank_device() -> str:
    """Where a model loads without --device: the GPU (under a launcher, the rank's own: LOCAL_RANK), else the CPU."""
    import os

    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "cuda"


def load_model_or_adapter(path: str, device: str | None = None, base: str | None = None):
    """(model, tokenizer) in eval mode, from a model dir or an adapter dir (+ its base, or `base`)."""
    if Path(path).is_dir():  # an export, a training run or a checkpoint: the model or adapter inside
        path = resolve_model(path)
    adapter_cfg = Path(path) / "adapter_config.json"
    safeload.check_no_code(path)
    if not adapter_cfg.is_file():
        if base:
            raise UserError(f"--base: {path} is not a PEFT adapter (no adapter_config.json)")
        return load_model(path, device)
    base = base or read_json_object(adapter_cfg).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{adapter_cfg}: names no base model; pass --base PATH")
    model, _ = load_model(base, device)
    try:
        model = safeload.peft_adapter(model, path, "--model").merge_and_unload().eval()
        tok = safeload.tokenizer(path)  # saved with the adapter: it has the tuned chat template
    except Exception as exc:  # noqa: BLE001 - a mismatched base/adapter pair is the user's choice of paths
        raise UserError(f"cannot load adapter {path} on base {base}: {_first_line(exc)}") from None
    _ensure_pad(tok)
    return model, tok


def _ensure_pad(tok) -> None:
    """Batched inference pads; a tokenizer without a pad token pads with EOS (or UNK)."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token


def chat_text(tok, messages: list[dict]) -> str:
    """The conversation in the model's chat template, ready for the assistant's reply; BOS left to encoding."""
    if not getattr(tok, "chat_template", None):
        raise UserError("--chat: this model's tokenizer has no chat template")
    from langgraft.model.template import render_chat

    text = render_chat(tok, messages, add_generation_prompt=True)
    bos = tok.bos_token or ""  # the tokenizer adds BOS itself when it encodes; the template may write it too
    return text[len(bos):] if bos and text.startswith(bos) else text


def chat_prompt(tok, prompt: str, history: list[dict] | tuple = ()) -> str:
    """The prompt as the next user turn (after `history`) of the model's chat template, ready for the answer."""
    return chat_text(tok, [*history, {"role": "user", "content": prompt}])
