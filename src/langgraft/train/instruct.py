"""Instruction data for `train --stage instruct`: prompt format, response-only labels, packing into rows.

Each example becomes its prompt (the user turn of the chat template; label -100, the model is not trained to
write the question) followed by the response and EOS (trained). Examples are packed in order into rows of
`block_size` tokens, a new row when the next example does not fit; the rest of a row is padding with label
-100. A row is stored as [2, block_size] (ids, labels), so the engine's block machinery — batch order as a
function of the step, exact resume, DDP shards, the `data.pt` cache — serves this stage unchanged.

Why written here rather than TRL's SFTTrainer (which also masks prompts): it brings its own training loop, which
would lose this engine's fused head + loss, new-row training, exact resume and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jinja2 import TemplateError

from langgraft.errors import UserError

# The prompt format when the model's tokenizer has no chat template (base models): written into the trained
# tokenizer, so `langgraft eval --chat` and `apply_chat_template` prompt the tuned model the way it was trained.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n### Response:\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}"
)


@dataclass
class PackedExamples:
    rows: torch.Tensor  # [n_rows, 2, block_size]: token ids, labels (-100 = not trained)
    examples: int  # examples packed
    skipped: dict = field(default_factory=dict)  # reason → count
    response_tokens: int = 0
    response_chars: int = 0
    slots: int = 0  # block positions holding a real token (prompt or response)

    @property
    def efficiency(self) -> float:
        return self.slots / max(self.rows.numel() // 2, 1)


def ensure_chat_template(tokenizer) -> bool:
    """Give `tokenizer` the default template when it has none; True when it was set."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = DEFAULT_TEMPLATE
    return True


def user_turn(record: dict) -> str:
    return f"{record['instruction']}\n\n{record['input']}" if record.get("input") else record["instruction"]


def encode_example(tokenizer, record: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + EOS) of one instruction record. BOS follows the tokenizer's own setting."""
    eos = _eos_id(tokenizer)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user_turn(record)}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = _encode_start(tokenizer, prompt)
    response_ids = tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [eos]
    return prompt_ids, response_ids


def _encode_start(tokenizer, text: str) -> list[int]:
    """Ids of the text a sequence starts with: the template may already write the BOS text; add the BOS id
    only when it does not, and drop an EOS that some tokenizers append to every text (Qwen-style)."""
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    if add_special and tokenizer.eos_token_id is not None and ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def is_single_exchange(turns: list[dict]) -> bool:
    return [t["role"] for t in turns] == ["user", "assistant"]


def encode_conversation(tokenizer, turns: list[dict]) -> tuple[list[int], list[int]]:
    """(ids, labels) of a chat: every assistant turn, as the template renders it (with its end-of-turn text), is
    a target; system and user turns and the template's headers are context. Each turn's text is the difference
    between the template rendered up to it and up to the turn before, so any template that only appends works."""
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(turns[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(turns[:i + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template rewrites earlier turns")
        context = _encode_start(tokenizer, prompt) if not done else \
            tokenizer(prompt[len(done):], add_special_tokens=False)["input_ids"]
        reply = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids += context + reply
        labels += [-100] * len(context) + reply
        done = full
    return ids, labels


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError("tokenizer has no eos_token; instruction tuning ends each response with one")
    return tokenizer.eos_token_id


def _encode_record(tokenizer, record: dict) -> tuple[tuple | None, str]:
    """((ids, labels, response chars), "") or (None, why it is skipped)."""
    turns = record.get("messages") or []
    if turns and not is_single_exchange(turns):
        try:
            ids, labels = encode_conversation(tokenizer, turns)
        except (TemplateError, ValueError):  # raise_exception() in a template (e.g. a role it refuses)
            return None, "chat_template_rejected"
        if all(x == -100 for x in labels):
            return None, "no_assistant_turn"
        return (ids, labels, sum(len(t["content"]) for t in turns if t["role"] == "assistant")), ""
    if not record.get("output", "").strip() or not record.get("instruction", "").strip():
        return None, "empty_instruction_or_output"
    prompt_ids, response_ids = encode_example(tokenizer, record)
    return (prompt_ids + response_ids, [-100] * len(prompt_ids) + response_ids, len(record["output"])), ""


def pack_examples(records, tokenizer, block_size: int, max_texts: int = 0) -> PackedExamples:
    """Encode and pack instruction records (instruction, input, output; and `messages` when the dataset has
    them: conversations other than one user → assistant exchange train on every assistant turn) into rows."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos_id(tokenizer)
    rows: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    out = PackedExamples(torch.empty(0, 2, block_size, dtype=torch.long), 0)
    for record in records:
        if max_texts and out.examples >= max_texts:
            break
        encoded, reason = _encode_record(tokenizer, record)
        if reason:
            out.skipped[reason] = out.skipped.get(reason, 0) + 1
            continue
        ex_ids, ex_labels, chars = encoded
        n = len(ex_ids)
        if n > block_size:
            out.skipped["longer_than_block_size"] = out.skipped.get("longer_than_block_size", 0) + 1
            continue
        if len(ids) + n > block_size:
            rows.append((ids, labels))
            ids, labels = [], []
        ids += ex_ids
        labels += ex_labels
        out.examples += 1
        out.slots += n
        out.response_tokens += sum(1 for x in ex_labels if x != -100)
        out.response_chars += chars
    if ids:
        rows.append((ids, labels))
    if rows:
        tensor = torch.full((len(rows), 2, block_size), -100, dtype=torch.long)
        tensor[:, 0] = pad
        for i, (row_ids, row_labels) in enumerate(rows):
            tensor[i, 0, :len(row_ids)] = torch.tensor(row_ids)
            tensor[i, 1, :len(row_labels)] = torch.tensor(row_labels)
        out.rows = tensor
    return out
