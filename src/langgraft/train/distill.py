"""`objective: distill`: new rows learn to reproduce the base model's likelihood of text, the base as teacher.

The teacher is the base model itself, and it is already inside the student: under `--stage align` with `rows: new`
the transformer and every old row are frozen, so the extended model restricted to its old token ids and to the
first `base_vocab_size` head rows *is* the base. No second model is loaded and the teacher cannot drift.

The two models tokenize the same text differently, so they are matched where their tokenizations share a
boundary. Every student token is either an old token (one teacher token, itself) or a new token whose surface the
base tokenizer splits into `base_ids` (new_tokens.json), so replacing each new token by its `base_ids` gives a
teacher sequence of exactly the same bytes in which every student token boundary is also a teacher boundary.
For each student token t (after the first of its block) the loss compares

    S_t = log p_student(token t | tokens before it)      and
    T_t = Σ log p_base(piece | pieces before it), over the base pieces of token t,

the log-likelihood each model gives the same stretch of text in the same context, and is the mean of
(S_t − T_t)² in nats². When S_t = T_t everywhere, the grafted model gives every text of the corpus the base's own
likelihood: its bits per character on it are the base's. Old-token targets count too: new rows that take
probability from old tokens the base would have predicted are pulled back. The teacher sequence is the base's
tokenization of each new token's surface rather than of the whole text; where the base tokenizer would have merged
across a new token's edge, the teacher scores a slightly longer path than its canonical one (measured in
docs/BENCHMARKS.md).

Why hand-written: the cross-tokenizer distillation methods this follows (token distillation, ALM) ship as research
code tied to their own training loops and models; the objective is a few tensor operations on top of the training
engine's own hidden states and head (`LossModule`), which keeps checkpoints, resume, DDP and export unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from langgraft.errors import UserError
from langgraft.train.loss import auto_chunk
from langgraft.train.model import LossModule, split_batch


def check_distill(stage: str, rows: str) -> None:
    """The teacher is the frozen base inside the model: only align (transformer frozen) with rows: new has one."""
    if stage != "align":
        raise UserError(f"objective: distill: --stage {stage} trains the transformer (LoRA), so the base inside "
                        "the model would no longer be the base; distill only in --stage align")
    if rows != "new":
        raise UserError(f"objective: distill needs rows: new (got rows: {rows}): the base is the teacher only "
                        "while every old row stays the base's")


def piece_table(new_tokens: dict, vocab: int, where: str) -> list[list[int]]:
    """For each student id, the teacher ids of its surface: itself for an old id, `base_ids` for a new one."""
    base = new_tokens["base_vocab_size"]
    table = [[i] for i in range(vocab)]
    for tok in new_tokens["tokens"]:
        pieces = tok.get("base_ids") or []
        if not pieces or not all(isinstance(i, int) and 0 <= i < base for i in pieces):
            raise UserError(f"{where}/new_tokens.json: token {tok['id']} ({tok.get('token')!r}) has no base_ids "
                            "within the base vocabulary, so the base cannot score its text (objective: distill)")
        table[tok["id"]] = list(pieces)
    return table


def teacher_batch(ids: torch.Tensor, table: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher ids [B, L], padded with 0 at the end, and ends [B, T]: one past the last teacher position of each
    student token) for student ids [B, T]."""
    rows, ends = [], []
    for row in ids.tolist():
        seq, end = [], []
        for i in row:
            seq.extend(table[i])
            end.append(len(seq))
        rows.append(seq)
        ends.append(end)
    width = max(map(len, rows))
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for b, seq in enumerate(rows):
        out[b, :len(seq)] = torch.tensor(seq)
    return out.to(ids.device), torch.tensor(ends, device=ids.device)


def token_logprobs(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, delta=None, idx=None,
                   rows: int | None = None, chunk: int = 0) -> torch.Tensor:
    """log p(targets) [B, T] from hidden states h [B, T, D] through the head `weight`, over its first `rows` rows
    (None: all), with rows `idx` replaced by `delta` (the trained rows, which alone get a gradient). Chunked and
    recomputed in backward, so no more than one chunk of [tokens, vocab] logits is ever held."""
    w = weight.detach()[:rows] if rows else weight.detach()
    flat_h, flat_y = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    chunk = chunk or auto_chunk(h.device, w.shape[0])

    def piece(hc, yc, dc):
        logits = (hc @ w.t().to(hc.dtype)).float()
        if dc is not None:
            logits = logits.index_copy(1, idx, (hc @ dc.t().to(hc.dtype)).float())
        return logits.log_softmax(-1).gather(1, yc[:, None])[:, 0]

    parts = []
    for s in range(0, flat_h.shape[0], chunk):
        hc, yc = flat_h[s:s + chunk], flat_y[s:s + chunk]
        grads = torch.is_grad_enabled() and (hc.requires_grad or (delta is not None and delta.requires_grad))
        parts.append(checkpoint(piece, hc, yc, delta, use_reentrant=False) if grads else piece(hc, yc, delta))
    return torch.cat(parts).view(targets.shape)


def span_loss(student: torch.Tensor, teacher: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """mean over student tokens 1.. of (S_t − T_t)²: `student` [B, T-1] log p of tokens 1..T-1, `teacher` [B, L-1]
    log p of teacher tokens 1..L-1, `ends` [B, T] as `teacher_batch` returns them."""
    # cum[:, j] = Σ teacher log p of teacher tokens 1..j; token t spans teacher tokens ends[t-1] .. ends[t]-1
    cum = torch.nn.functional.pad(teacher.cumsum(1), (1, 0))
    t_span = cum.gather(1, ends[:, 1:] - 1) - cum.gather(1, ends[:, :-1] - 1)
    return (student.float() - t_span.float()).pow(2).mean()


class DistillLossModule(LossModule):
    """input_ids [B, T] → the span-likelihood distillation loss above (validation keeps the next-token loss)."""

    def __init__(self, peft_model, chunk: int, table: list[list[int]], base_vocab_size: int):
        super().__init__(peft_model, chunk)
        self.table, self.base_vocab_size = table, base_vocab_size

    def forward(self, batch):
        ids, _, _ = split_batch(batch)
        t_ids, ends = teacher_batch(ids, self.table)
        weight, delta, idx, _ = self.head()
        with torch.no_grad():
            t_h = self.hidden(t_ids)[:, :-1]
            teacher = token_logprobs(t_h, weight, t_ids[:, 1:], rows=self.base_vocab_size, chunk=self.chunk)
        s_h = self.hidden(ids)[:, :-1]
        student = token_logprobs(s_h, weight, ids[:, 1:], delta=delta, idx=idx, chunk=self.chunk)
        return span_loss(student, teacher, ends)


def loss_module(peft_model, cfg):
    """The stage's loss module: next-token loss, or the distillation above (`cfg.objective`)."""
    if cfg.objective != "distill":
        return LossModule(peft_model, cfg.loss_chunk)
    from langgraft.formats.new_tokens import read_new_tokens

    new_tokens = read_new_tokens(cfg.model, flag="model", made_by="`langgraft extend`")
    vocab = peft_model.get_input_embeddings().weight.shape[0]
    table = piece_table(new_tokens, vocab, cfg.model)
    return DistillLossModule(peft_model, cfg.loss_chunk, table, new_tokens["base_vocab_size"])
