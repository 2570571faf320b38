"""Text generation for `chat`, `generate` and eval's generation tasks: one set of sampling options.

Decoding is transformers' `generate` (KV cache, `GenerationConfig`, `stop_strings`, `TextIteratorStreamer`);
what is decided here is the part every caller must agree on:

- Greedy by default with repetition penalty 1.1 (the setting of the paper's inference script), sampling with
  temperature / top-p / top-k when `temperature` > 0, reproducible for a given `seed`.
- Prompts are batched by length with left padding, which must not change a greedy output: positions come from
  the attention mask, and the repetition penalty is transformers' own processor told to ignore each row's
  padding (`prompt_ignore_length`), so a pad token (often EOS) is not penalised in a padded row when it would
  not be in a lone one. In fp32 batched and one-at-a-time outputs are identical (tests, bench/generate.py); in
  bf16 the padded kernels round differently and a near-tie between two tokens can go either way.
- A prompt longer than the context (`max_position_embeddings` − `max_new_tokens`) loses its start; the number
  of dropped tokens is returned with every output so callers report it.
- Text stops before the first stop string (the string itself is not part of the output).

Models come from `model.load.load_model_or_adapter`: a merged model dir (an `export` model/, any HF causal LM)
or a PEFT adapter dir (a training run's `adapter/`, an `export` adapter/) on top of its base model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Optional

from langgraft.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Range
from langgraft.errors import UserError
from langgraft.options import check_ranges, option


@dataclass
class Sampling:
    """How text is decoded (chat, generate, eval's generation tasks); the source of their sampling flags."""

    max_new_tokens: PosInt = 256  # most tokens generated per prompt
    temperature: NonNegFloat = 0.0  # 0 = greedy; > 0 samples
    top_p: Annotated[float, Range(0, 1, lo_open=True)] = 1.0  # nucleus sampling mass (sampling only)
    top_k: NonNegInt = 0  # keep the k most likely tokens (0 = off)
    repetition_penalty: PosFloat = 1.1  # 1 = off
    seed: Optional[NonNegInt] = None  # random seed for sampling (the same seed, prompts and batch give the same text)
    stop: list[str] = option(factory=list, metavar="TEXT", repeat=True)  # stop before this text (repeatable)

    def __post_init__(self) -> None:
        check_ranges(self)
        if any(not s for s in self.stop):
            raise UserError("--stop: a stop string cannot be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Loading:
    """Where a model to generate with comes from, beside its path: for `chat` and `generate`."""

    base: Optional[str] = None  # base model under an adapter dir (default: the one the adapter names)
    # torch device (default: cuda if available, else cpu; under a launcher each rank's own GPU); auto: one model
    # spread over every GPU (device_map="auto")
    device: Optional[str] = option(None, fingerprint=False)


def context_limit(model, s: Sampling) -> int:
    window = int(getattr(model.config, "max_position_embeddings", None) or 2048)
    if window <= s.max_new_tokens:
        raise UserError(f"--max-new-tokens {s.max_new_tokens}: the model's context is {window} tokens")
    return window - s.max_new_tokens


def encode(tok, text: str, limit: int) -> tuple[list[int], int]:
    """(prompt ids, how many tokens were cut from its start to fit `limit`)."""
    ids = tok(text).input_ids
    return ids[-limit:], max(len(ids) - limit, 0)


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def _eos_ids(model, tok) -> list[int]:
    """The tokenizer's EOS and every end token the model's generation config names (chat models often list an
    end-of-turn token there that is not the tokenizer's EOS)."""
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [tok.eos_token_id] + (own if isinstance(own, list) else [own])
    return list(dict.fromkeys(i for i in ids if i is not None))


def generate_ids(model, tok, prompts: list[list[int]], s: Sampling, streamer=None,
                 interrupted: list[bool] | None = None) -> list[list[int]]:
    """New token ids for each prompt (one batch, left-padded), ending at EOS (included) or the budget, or at the
    next step once `interrupted[0]` is set (from another thread)."""
    import torch
    from transformers import (GenerationConfig, LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                              StoppingCriteriaList)

    width = max(len(p) for p in prompts)
    pad = _pad_id(tok)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    # Every value set explicitly: generate() fills unset ones from the model's generation_config.json (a chat
    # model's own temperature or repetition penalty would otherwise apply on top of ours).
    sampling = {"do_sample": False} if s.greedy else {"do_sample": True, "temperature": s.temperature,
                                                      "top_p": s.top_p, "top_k": s.top_k}
    eos = _eos_ids(model, tok)
    config = GenerationConfig(max_new_tokens=s.max_new_tokens, pad_token_id=pad, eos_token_id=eos or None,
                              stop_strings=s.stop or None, repetition_penalty=1.0, **sampling)
    processors = LogitsProcessorList()
    if s.repetition_penalty != 1.0:
        pads = (width - mask.sum(1)).to(model.device)
        processors.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty, prompt_ignore_length=pads))
    if not s.greedy and s.seed is not None:
        torch.manual_seed(s.seed)
    stopping = StoppingCriteriaList()
    if interrupted is not None:  # a plain function: generate() deep-copies its criteria, sharing this flag
        stopping.append(lambda input_ids, scores, **_: torch.full((input_ids.shape[0],), interrupted[0],
                                                                   dtype=torch.bool, device=input_ids.device))
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                             generation_config=config, logits_processor=processors, stopping_criteria=stopping,
                             streamer=streamer, tokenizer=tok if s.stop else None)
    result = []
    for row in out[:, width:].tolist():
        ends = [k for k, t in enumerate(row) if t in eos]
        result.append(row[:ends[0] + 1] if ends else row)
    return result


def decode(tok, new_ids: list[int], s: Sampling) -> str:
    text = tok.decode(new_ids, skip_special_tokens=True)
    return cut_at_stop(text, s.stop)


def cut_at_stop(text: str, stop: list[str]) -> str:
    cuts = [text.find(x) for x in stop if x in text]
    return text[:min(cuts)] if cuts else text


def generate_texts(model, tok, prompts: list[str], s: Sampling, batch_size: int = 16, on_batch=None) -> list[dict]:
    """{"text", "ids", "new_tokens", "truncated_tokens", "context_tokens"} per prompt (ids: the generated ids), in
    order; batched longest first.
    `on_batch(n prompts, n new tokens)` is called after each batch (progress)."""
    limit = context_limit(model, s)
    encoded = [encode(tok, p, limit) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i][0]))
    out: list[dict] = [{}] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        new = generate_ids(model, tok, [encoded[i][0] for i in rows], s)
        for i, ids in zip(rows, new):
            out[i] = {"text": decode(tok, ids, s), "ids": ids, "new_tokens": len(ids),
                      "truncated_tokens": encoded[i][1],
                      "context_tokens": len(encoded[i][0])}
        if on_batch is not None:
            on_batch(len(rows), sum(map(len, new)))
    return out


def stream(model, tok, prompt: str, s: Sampling, write) -> dict:
    """Generate for one prompt, calling `write(text)` with each piece as it is decoded. The pieces join to the
    returned text: leading and trailing whitespace is not written, and nothing from a stop string on. Ctrl-C
    (KeyboardInterrupt) stops the generation too before it is raised again."""
    from transformers import TextIteratorStreamer

    ids, truncated = encode(tok, prompt, context_limit(model, s))
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    result: dict = {}
    interrupted = [False]

    def work() -> None:
        try:
            result["ids"] = generate_ids(model, tok, [ids], s, streamer, interrupted)[0]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            result["error"] = exc
            streamer.text_queue.put(streamer.stop_signal)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    hold = max((len(x) for x in s.stop), default=1) - 1  # a stop string may still be completing
    text, shown = "", 0
    try:
        for piece in streamer:
            text += piece
            safe = cut_at_stop(text, s.stop).strip()
            ready = len(safe) if safe != text.strip() else len(safe) - hold
            start = len(text) - len(text.lstrip())
            if ready > shown:
                write(text[start + shown:start + ready])
                shown = ready
    except KeyboardInterrupt:
        interrupted[0] = True
        thread.join()
        raise
    thread.join()
    if "error" in result:
        raise result["error"]
    final = decode(tok, result["ids"], s).strip()
    if len(final) > shown:
        write(final[shown:])
    return {"text": final, "new_tokens": len(result["ids"]), "truncated_tokens": truncated,
            "context_tokens": len(ids)}
