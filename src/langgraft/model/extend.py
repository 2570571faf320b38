"""`langgraft extend`: resize a causal LM to an extended tokenizer and initialise the new rows.

Surgery is an identity on old tokens: old embedding and head rows are copied bit for bit, so for a prompt of old
tokens the old-token logits are unchanged. The vocabulary is padded to a multiple of 64 (tensor-core friendly);
padding head rows are set to the mean of the old head rows, so a padding logit is the *average* old logit and can
never be the arg-max, and `generation_config.suppress_tokens` lists them so `generate()` never emits one.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from langgraft.config import from_dict, to_dict
from langgraft.errors import UserError
from langgraft.formats.extend_report import write_extend_report
from langgraft.formats.new_tokens import NAME as NEW_TOKENS, read_new_tokens, write_new_tokens
from langgraft.hub import resolve_model
from langgraft.options import settings as settings_of
from langgraft.rundir import StageResult, run_stage
from langgraft.model.init import init_mean, init_rows
from langgraft.model.options import ExtendOptions
from langgraft.model.load import load_causal_lm, own_tokenizer

PAD_MULTIPLE = 64


def extend_model(model: str | Path, tokenizer: str | Path, *, out: str | Path, opts: ExtendOptions | None = None,
                 force: bool = False, **settings: Any) -> StageResult:
    """Resize `model` to the tokenizer dir written by `tokenizer extend`; write an HF model dir to `out`.
    `settings`: fields of `ExtendOptions`, over `opts`.

    The extended tokenizer must keep every id of the model's own tokenizer; when the model folder has no
    tokenizer to compare with, only `trust_tokenizer=True` (`--trust-tokenizer`) proceeds on sizes alone."""
    opts = from_dict(ExtendOptions, {**to_dict(opts or ExtendOptions()), **settings}, source="extend")
    init, seed = opts.init, opts.seed
    tok_dir = Path(tokenizer)
    new_tokens = read_new_tokens(tok_dir)
    model = resolve_model(model)  # before anything is written: a mistyped path fails here, in a second
    config = {"model": model, "tokenizer": str(tok_dir), "pad_multiple": PAD_MULTIPLE, **settings_of(opts)}
    inputs = [tok_dir] + ([model] if Path(model).exists() else [])
    base_tok = own_tokenizer(model)  # loaded once: checked here, before any weights load or folder is made
    if base_tok is None and not opts.trust_tokenizer:
        raise UserError(f"--model {model}: no tokenizer files next to the model, so {tok_dir} cannot be checked "
                        "to keep every id of the model's vocabulary; add them, or pass --trust-tokenizer to "
                        "proceed on vocabulary sizes alone")

    def work(tmp: Path) -> dict:
        return _extend(model, tok_dir, new_tokens, tmp, base_tok=base_tok, init=init, seed=seed)

    return run_stage(out, stage="extend", config=config, inputs=inputs, work=work, force=force)


def check_superset(base_tok, tokenizer, new_tokens: dict, old_rows: int, where: Path) -> str:
    """The new tokenizer must keep every base id's string (`base_tok`: the model's own tokenizer, None when it
    has none); returns how the check was done (for the report)."""
    base_size = new_tokens["base_vocab_size"]
    if len(tokenizer) != new_tokens["vocab_size"]:
        raise UserError(f"--tokenizer {where}: tokenizer has {len(tokenizer)} tokens but new_tokens.json says "
                        f"vocab_size {new_tokens['vocab_size']}")
    if base_size > old_rows:
        raise UserError(f"--tokenizer {where}: base vocabulary has {base_size} tokens but the model has only "
                        f"{old_rows} embedding rows; this tokenizer was not built on this model's tokenizer")
    bad_ids = [t["id"] for t in new_tokens["tokens"] if not base_size <= t["id"] < len(tokenizer)]
    if bad_ids:
        raise UserError(f"{where / NEW_TOKENS}: new token id {bad_ids[0]} outside "
                        f"[{base_size}, {len(tokenizer)})")
    if base_tok is None:
        return "sizes only (no tokenizer next to the model)"
    if len(base_tok) != base_size:
        raise UserError(f"--tokenizer {where}: the model's tokenizer has {len(base_tok)} tokens, the extended "
                        f"tokenizer's base had {base_size}; not a superset of this model's vocabulary")
    ids = list(range(base_size))
    old, new = base_tok.convert_ids_to_tokens(ids), tokenizer.convert_ids_to_tokens(ids)
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            raise UserError(f"--tokenizer {where}: id {i} is {b!r} but the model's tokenizer has {a!r}; "
                            "not a superset of the model's vocabulary")
    return "token strings of all base ids"


def _extend(model_id: str, tok_dir: Path, new_tokens: dict, tmp: Path, *, base_tok, init: str, seed: int) -> dict:
    from langgraft import safeload

    tokenizer = safeload.tokenizer(tok_dir, "--tokenizer")
    model = load_causal_lm(model_id)
    old_rows = model.get_input_embeddings().weight.shape[0]
    check = check_superset(base_tok, tokenizer, new_tokens, old_rows, tok_dir)
    if check.startswith("sizes only"):
        print(f"langgraft extend: warning: --trust-tokenizer: {tok_dir} checked against {model_id} by vocabulary "
              "sizes only (no tokenizer next to the model)", file=sys.stderr, flush=True)
    size = max(old_rows, math.ceil(len(tokenizer) / PAD_MULTIPLE) * PAD_MULTIPLE)
    tied = _is_tied(model)
    model.resize_token_embeddings(size, mean_resizing=False)
    base_size, tokens = new_tokens["base_vocab_size"], new_tokens["tokens"]
    std = float(getattr(model.config, "initializer_range", 0.02))
    emb = model.get_input_embeddings().weight
    fallbacks = init_rows(emb.data, init, tokens, base_size, std=std, seed=seed)
    head = model.get_output_embeddings()
    pad_ids = list(range(max(old_rows, len(tokenizer)), size))
    if tied:
        if head is not None and head.weight.data_ptr() != emb.data_ptr():
            # an untied head under a config that says tied is re-tied on load, silently dropping one of the two
            # row sets (and training would update them apart): stop instead of saving such a model
            raise RuntimeError("resize untied a tied head")
    else:
        init_rows(head.weight.data, init, tokens, base_size, std=std, seed=seed + 1)
    init_mean(head.weight.data if head is not None else emb.data, pad_ids, base_size)
    model.config.vocab_size = size
    if model.generation_config is not None and pad_ids:
        model.generation_config.suppress_tokens = pad_ids
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_new_tokens(tmp, base_size, tokens, vocab_size=new_tokens["vocab_size"])
    report = {"base_vocab_size": base_size, "old_rows": old_rows, "vocab_size": len(tokenizer),
              "padded_vocab_size": size, "new_tokens": len(tokens), "padding_rows": len(pad_ids), "init": init,
              "mean_fallbacks": fallbacks, "tied": tied, "superset_check": check,
              "model_type": model.config.model_type, "source_model": model_id}
    write_extend_report(tmp, report)
    return report


def _is_tied(model) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight
