"""The trainable model of a stage: which parameters train (stage × rows), and the loss it computes.

Every stage is a PEFT model so that one export path serves them all: `align` is a `TrainableTokensConfig` on the
embedding (and an untied head), `pretrain` and `instruct` a `LoraConfig` with `trainable_token_indices`.
`rows=new` trains the new tokenizer rows only (old rows stay bit-identical); `rows=all` makes every real row
trainable the same way; `rows=none` trains LoRA alone (no embedding or head row changes: the control arm).
The loss bypasses the model's own head (see `loss.py`) but reads the head's weights from the PEFT layers.
"""

from __future__ import annotations

import torch
from torch import nn

from langgraft.errors import UserError
from langgraft.train.loss import as_slice, fused_head_ce, head_ce_sum


def build_peft_model(model, stage: str, cfg, token_ids: list[int]):
    """Wrap `model` (an extended HF causal LM) for `stage`; only the stage's parameters require grad."""
    import peft

    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    emb_name = _module_name(model, model.get_input_embeddings())
    head_name = _module_name(model, model.get_output_embeddings())
    targets = [emb_name] if tied else [emb_name, head_name]
    rows = {name: token_ids for name in targets} if token_ids else None
    if stage == "align":
        pcfg = peft.TrainableTokensConfig(target_modules=targets, token_indices=token_ids)
    elif stage in ("pretrain", "instruct"):
        check_lora_targets(model, cfg.lora.targets)
        pcfg = peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                               target_modules="all-linear" if cfg.lora.targets == ["all-linear"] else cfg.lora.targets,
                               task_type="CAUSAL_LM",
                               trainable_token_indices=rows)
    else:
        raise UserError(f"--stage {stage}: must be align, pretrain or instruct")
    return peft.get_peft_model(model, pcfg)


def check_lora_targets(model, targets: list[str]) -> None:
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    for target in targets:
        if target not in names and target != "all-linear":
            raise UserError(f"lora.targets: no linear module named {target!r} in this model "
                            f"(has: {', '.join(sorted(names))})")


def _module_name(model, module) -> str:
    for name, mod in model.named_modules():
        if mod is module:
            return name.rsplit(".", 1)[-1]
    raise RuntimeError("embedding module not found")


def token_layer(module):
    """The PEFT TrainableTokensLayer that owns the trained rows of an embedding or head module."""
    layer = getattr(module, "token_adapter", module)
    return layer.tied_adapter or layer


def causal_lm(peft_model):
    return peft_model.get_base_model()


class LossModule(nn.Module):
    """input_ids [B, T] → mean next-token loss; a module so DDP/FSDP wrap the whole computation."""

    def __init__(self, peft_model, chunk: int):
        super().__init__()
        self.peft_model = peft_model
        self.chunk = chunk
        self._ids: torch.Tensor | None = None
        self._rows: slice | None = None
        lm = causal_lm(peft_model)
        # Logit soft-capping (Gemma 2/3) is not fused: those models take the model's own loss path.
        self.fused = not getattr(lm.config.get_text_config(), "final_logit_softcapping", None)

    def hidden(self, input_ids, position_ids=None):
        lm = causal_lm(self.peft_model)
        body = getattr(lm, lm.base_model_prefix)
        # no attention mask: with restarted position ids transformers builds the block-diagonal causal mask
        return body(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state

    def head(self):
        """(base weight [V, D], trained rows [k, D], their ids [k], the ids as a slice or None) of the head; with
        no trained rows (rows=none) an empty [0, D] delta, so one loss path serves every stage."""
        layer = self.peft_model.get_output_embeddings()
        adapter = getattr(layer, "token_adapter", layer)
        if not hasattr(adapter, "trainable_tokens_delta"):
            weight = getattr(layer, "base_layer", layer).weight
            if self._ids is None or self._ids.device != weight.device:
                self._ids, self._rows = torch.zeros(0, dtype=torch.long, device=weight.device), None
            return weight, weight.new_zeros(0, weight.shape[1]), self._ids, self._rows
        tl = token_layer(layer)
        weight = adapter.base_layer.weight
        delta = tl.trainable_tokens_delta["default"]
        if self._ids is None or self._ids.device != weight.device:  # once: not a host→device copy every step
            ids = list(tl.token_indices["default"])
            self._ids, self._rows = torch.as_tensor(ids, device=weight.device), as_slice(ids)
        return weight, delta, self._ids, self._rows

    def forward(self, batch):
        """`batch` is [B, T] token ids (every next token is a target) or [B, 3, T] ids, labels (-100 = not a
        target: instruction prompts and padding) and position ids (restarting at each packed example)."""
        input_ids, labels, positions = split_batch(batch)
        if not self.fused:
            return self.peft_model(input_ids=input_ids, labels=labels, position_ids=positions, use_cache=False).loss
        h = self.hidden(input_ids, positions)[:, :-1]
        weight, delta, idx, rows = self.head()
        return fused_head_ce(h, delta, weight, idx, labels[:, 1:], chunk=self.chunk, rows=rows)

    @torch.no_grad()
    def loss_sum(self, batch) -> tuple[float, int]:
        """(summed nats, target tokens) for validation."""
        input_ids, labels, positions = split_batch(batch)
        if not self.fused:
            out = self.peft_model(input_ids=input_ids, labels=labels, position_ids=positions, use_cache=False)
            n = int((labels[:, 1:] != -100).sum())
            return float(out.loss) * n, n
        h = self.hidden(input_ids, positions)[:, :-1]
        weight, delta, idx, _ = self.head()
        w_eff = weight.index_copy(0, idx, delta.to(weight.dtype))
        return head_ce_sum(h, w_eff, labels[:, 1:], self.chunk)


def split_batch(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(ids, labels, position ids or None) of a pretraining [B, T] or instruction [B, 3, T] batch."""
    return (batch[:, 0], batch[:, 1], batch[:, 2]) if batch.dim() == 3 else (batch, batch, None)
