"""Where a model name points: a local directory, or a Hugging Face hub id — decided once, before anything loads.

Every verb that loads a model or tokenizer (extend, train, export, eval, chat, generate) resolves the name here
first. A local directory comes back absolute, so what a run records (an adapter's `base_model_name_or_path`, a
manifest's config) resolves from any working directory. Anything else is asked of the hub once, with a short
timeout: transformers' own loaders retry an unreachable hub for tens of seconds and then report only the hub's
side, which hides the usual cause — a mistyped local path such as `runs/nope`, which is also a valid hub id.
HF's offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) is respected: then only the local cache is consulted.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError

HUB_TIMEOUT_S = 10.0


def resolve_model(name: str | Path, *, flag: str = "--model") -> str:
    """An absolute local directory, or a hub id the hub (or, offline, the local cache) knows; else one UserError
    line saying there is no such local directory and what the hub answered."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(_model_folder(path).resolve())
    if path.exists():
        raise UserError(f"{flag} {text}: not a directory (a model is an HF model folder or a hub id)")
    local = f"{flag} {text}: no such local directory ({path.absolute()})"
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise UserError(f"{local}, and not a hub id either") from None
    cached = isinstance(try_to_load_from_cache(text, "config.json"), str)
    if constants.is_offline_mode():
        if cached:
            return text
        raise UserError(f"{local}; as a hub id: offline mode is on (HF_HUB_OFFLINE) and {text} is not in the "
                        "local HF cache")
    answer = _ask_hub(text)
    if answer is None or cached:
        return text
    raise UserError(f"{local}; as a hub id: {answer}")


def _model_folder(path: Path) -> Path:
    """A folder that is neither a model nor an adapter but holds one means that one, so every verb takes the
    folders langgraft prints: an export (`export --out DIR`: DIR/model), a training run or one of its checkpoints
    (RUN/adapter, RUN/checkpoints/step-N/adapter: PEFT adapters, loaded on the base they name)."""
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path
    for inner in (path / "model" / "config.json", path / "adapter" / "adapter_config.json"):
        if inner.is_file():
            return inner.parent
    return path


def is_hub_id(name: str | None) -> bool:
    """Whether a recorded model name is a hub id: `resolve_model` records every local folder as an absolute path,
    so a name that is not absolute, not relative to here and not on disk came from the hub."""
    if not name:
        return False
    return not (Path(name).is_absolute() or name.startswith((".", "~")) or Path(name).exists())


def _ask_hub(repo_id: str) -> str | None:
    """None when the hub has the model; else what it (or the network) answered, in a few words."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return None  # it exists; loading says what access it needs
    except RepositoryNotFoundError:
        return f"the hub has no model {repo_id} (or it is private and no token is set)"
    except Exception as exc:  # noqa: BLE001 - any transport failure means the same thing here: no answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"the hub is unreachable ({type(exc).__name__}: {first})"
    return None
