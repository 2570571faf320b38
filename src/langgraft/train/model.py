"""The trainable model of a stage: which parameters train (stage × rows), and the loss it computes.

Every stage is a PEFT model so that one export path serves them all: `align` is a `TrainableTokensConfig` on the
embedding (and an untied head), `pretrain` and `instruct` a `LoraConfig` with `trainable_token_indices`.
`rows=new` trains the new tokenizer rows only (old rows stay bit-identical); `rows=all` makes every real row
trainable the same way; `rows=none` trains LoRA alone (no embedding or head row changes: the control arm).
The loss bypasses the model's own head (see `loss.py`) but reads the head's weights from the PEFT layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from langgraft.errors import UserError
from langgraft.train.config import TrainConfig
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
    peft_model = peft.get_peft_model(model, pcfg)
    for module in list(peft_model.modules()):
        drops = getattr(module, "lora_dropout", {})
        for name, drop in drops.items():
            if isinstance(drop, nn.Dropout):
                drops[name] = LoraDropout(drop.p)
    return peft_model


class LoraDropout(nn.Module):
    """LoRA's input dropout, as narrow as what reads it: under autocast the input is cast first (lora_A casts it
    anyway), and the mask autograd keeps is a bool one (`nn.Dropout` on CPU keeps a float mask the input's width:
    with float32 inputs that was a third of the activations a LoRA step saves)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return torch.native_dropout(x, self.p, True)[0]


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
        self._head_cache: dict = {}  # the merged head weight, kept across micro-batches (loss.merged_weight)
        self._lookup: tuple | None = None  # (delta, token id → delta row or -1) of the input embedding
        lm = causal_lm(peft_model)
        # Logit soft-capping (Gemma 2/3) is not fused: those models take the model's own loss path.
        self.fused = not getattr(lm.config.get_text_config(), "final_logit_softcapping", None)

    def hidden(self, input_ids, position_ids=None):
        lm = causal_lm(self.peft_model)
        body = getattr(lm, lm.base_model_prefix)
        embeds = self.embed(input_ids)
        ids = None if embeds is not None else input_ids
        # no attention mask: with restarted position ids transformers builds the block-diagonal causal mask
        return body(input_ids=ids, inputs_embeds=embeds, position_ids=position_ids,
                    use_cache=False).last_hidden_state

    def embed(self, input_ids):
        """The input embeddings with the trained rows read from their delta, or None where the embedding has no
        active trained rows (the model's own embedding then runs). PEFT's layer builds the whole merged [vocab,
        dim] matrix at every forward pass and back-propagates a dense [vocab, dim] gradient into it: ~0.35 s of a
        512-token micro-batch at 66,688 × 576 on the 2-core CPU. Here only the rows looked up are touched; the
        values are PEFT's to the bit (the same rows, cast and scaled the same way)."""
        layer = self.peft_model.get_input_embeddings()
        adapter = getattr(layer, "token_adapter", layer)
        if (not hasattr(adapter, "trainable_tokens_delta") or adapter.merged or adapter.disable_adapters
                or adapter.active_adapters != ["default"]):
            return None
        tl = token_layer(layer)
        delta = tl.trainable_tokens_delta["default"]
        if self._lookup is None or self._lookup[0] is not delta or self._lookup[1].device != input_ids.device:
            ids = torch.as_tensor(list(tl.token_indices["default"]), device=input_ids.device)
            table = torch.full((adapter.base_layer.weight.shape[0],), -1, dtype=torch.long, device=input_ids.device)
            table[ids] = torch.arange(len(ids), device=input_ids.device)
            self._lookup = (delta, table)
        local = self._lookup[1][input_ids]
        base = adapter.base_layer(input_ids)
        rows = nn.functional.embedding(local.clamp(min=0), delta).to(base.dtype)
        scale = getattr(adapter.base_layer, "embed_scale", None)  # Gemma 3's scaled embedding, as its forward does
        if scale is not None:
            rows = rows * scale.to(rows.dtype)
        return torch.where((local >= 0).unsqueeze(-1), rows, base)

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
        return fused_head_ce(h, delta, weight, idx, labels[:, 1:], chunk=self.chunk, rows=rows,
                             cache=self._head_cache)

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


def use_bf16(precision: str) -> bool:
    """auto = bf16 autocast on GPUs that support it and on CPUs with native bf16 instructions (there, measured
    interleaved in one process, a pretrain step ran 1.3–1.5× faster than fp32); fp32 elsewhere."""
    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_stage_model(stage: str, cfg: TrainConfig, accelerator):
    from langgraft import safeload
    from langgraft.formats.new_tokens import read_new_tokens
    from langgraft.model.load import load_causal_lm
    from langgraft.train.instruct import check_packed_attention, ensure_chat_template

    model_dir = Path(cfg.model)
    tokenizer = safeload.tokenizer(model_dir, "model")
    dtype = torch.bfloat16 if accelerator.device.type == "cuda" and use_bf16(cfg.precision) else torch.float32
    model = load_causal_lm(str(model_dir), dtype=dtype)
    if stage == "instruct" and ensure_chat_template(tokenizer):
        accelerator.print(f"langgraft train: {model_dir} has no chat template; using the built-in "
                          "'### Instruction / ### Response' one (saved with the adapter)")
    if stage == "instruct":
        check_packed_attention(model, accelerator.print)
    if cfg.rows == "new":
        token_ids = [t["id"] for t in read_new_tokens(model_dir, flag="model", made_by="`langgraft extend`")["tokens"]]
    else:
        token_ids = list(range(len(tokenizer))) if cfg.rows == "all" else []
    if not token_ids and cfg.rows == "new":
        raise UserError(f"model {model_dir}: new_tokens.json lists no new tokens; use rows=all")
    if cfg.gradient_checkpointing:
        checkpoint_layers(model, cfg.checkpoint_layers)
    peft_model = build_peft_model(model, stage, cfg, token_ids)
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # trained weights stay fp32 (bf16 base, fp32 master copy of what trains)
    if dtype == torch.float32 and use_bf16(cfg.precision):
        narrow_frozen_linears(peft_model)
    if cfg.compile:
        for layer in peft_model.get_base_model().model.layers:
            layer.compile()
    return tokenizer, peft_model, token_ids


def narrow_frozen_linears(peft_model) -> None:
    """Frozen linear weights in bf16 under bf16 autocast over float32 weights (CPU): autocast would cast each one to
    bf16 at every forward pass and keep the copy for the backward pass, so the result is the same to the bit and
    the float32 weights and their copies (2 × 2 bytes a weight) are gone. Embedding and head rows stay float32.

    The model's float32 tensors are views of its memory-mapped safetensors file: the float32 weights that stay (the
    embedding and head, the norms) are copied into the process, so the mapping closes. It would otherwise keep every
    page of the narrowed layers' float32 weights, read once at load, resident for the whole run (SmolLM2 with the
    Persian rows: 0.55 GB of file pages, of which the embedding's 0.15 GB are still used)."""
    embeddings = {id(p) for m in (peft_model.get_input_embeddings(), peft_model.get_output_embeddings())
                  for p in m.parameters()}
    for module in peft_model.modules():
        if type(module) is nn.Linear and not module.weight.requires_grad and id(module.weight) not in embeddings:
            module.to(torch.bfloat16)
    for p in peft_model.parameters():  # tied weights are one Parameter: each is copied once
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.clone()


def checkpoint_layers(model, first: int) -> None:
    """Activation checkpointing on the first `first` decoder layers (0: all). transformers' decoder layers are
    `GradientCheckpointingLayer`s that each recompute when their own `gradient_checkpointing` flag is set, so the
    layers past `first` are switched back off after enabling it model-wide."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not first:
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers[first:]:
        layer.gradient_checkpointing = False


def build_optimizer(peft_model, cfg: TrainConfig):
    rows, adapters = [], []
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            (rows if "trainable_tokens_delta" in name else adapters).append(p)
    # named: the trackers log each group's learning rate under its name
    groups = [{"params": rows, "lr": cfg.optim.embed_lr or cfg.optim.lr, "weight_decay": 0.0, "name": "embeddings"}]
    if adapters:
        groups.append({"params": adapters, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay,
                       "name": "lora"})
    # fused AdamW: one kernel for all parameters on GPUs (the foreach default is several times slower there)
    return torch.optim.AdamW(groups, fused=torch.cuda.is_available() or None)
