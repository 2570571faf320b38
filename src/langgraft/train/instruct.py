"""Instruction data for `train --stage instruct`: prompt format, response-only labels, packing into rows.

Each example becomes its prompt (the user turn of the chat template; label -100, the model is not trained to
write the question) followed by the response and EOS (trained); a conversation trains every assistant turn.
Whole examples are packed into rows of `block_size` tokens by best-fit decreasing bin packing; the rest of a row
is padding with label -100. A row is stored as [3, block_size] (ids, labels, position ids), so the engine's block
machinery — batch order as a function of the step, exact resume, DDP shards, the `packed-data/` cache — serves this
stage unchanged.

Packed examples do not see each other: position ids restart at 0 for every example (and for the padding), and
the model is called with those position ids and no 2-D attention mask, from which transformers builds a
block-diagonal causal mask (`masking_utils.find_packed_sequence_indices`, for the eager and sdpa paths). An
example's loss and gradients are then the same packed as alone, so its response is never trained to depend on
an unrelated neighbour. Flash-attention only splits a packed batch of one row, so those models are switched to
sdpa (or eager); `check_packed_attention` probes the loaded model once and refuses one whose code ignores the
packing.

Why written here rather than TRL's SFTTrainer (which also masks prompts): it brings its own training loop, which
would lose this engine's fused head + loss, new-row training, exact resume and metrics.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import torch
from jinja2 import TemplateError

from langgraft.errors import UserError
from langgraft.model.template import render_chat

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
    rows: torch.Tensor  # [n_rows, 3, block_size]: token ids, labels (-100 = not trained), position ids
    examples: int  # examples packed
    skipped: dict = field(default_factory=dict)  # reason → count
    response_tokens: int = 0
    response_chars: int = 0
    slots: int = 0  # block positions holding a real token (prompt or response)

    @property
    def efficiency(self) -> float:
        return self.slots / max(self.rows.numel() // 3, 1)


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
    prompt = render_chat(tokenizer, [{"role": "user", "content": user_turn(record)}], add_generation_prompt=True)
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
        prompt = render_chat(tokenizer, turns[:i], add_generation_prompt=True)
        full = render_chat(tokenizer, turns[:i + 1], add_generation_prompt=False)
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
    examples: list[tuple[list[int], list[int]]] = []
    out = PackedExamples(torch.empty(0, 3, block_size, dtype=torch.long), 0)
    for record in records:
        if max_texts and out.examples >= max_texts:
            break
        encoded, reason = _encode_record(tokenizer, record)
        if not reason and len(encoded[0]) > block_size:
            reason = "longer_than_block_size"
        if reason:
            out.skipped[reason] = out.skipped.get(reason, 0) + 1
            continue
        ex_ids, ex_labels, chars = encoded
        examples.append((ex_ids, ex_labels))
        out.examples += 1
        out.slots += len(ex_ids)
        out.response_tokens += sum(1 for x in ex_labels if x != -100)
        out.response_chars += chars
    rows = best_fit([len(ids) for ids, _ in examples], block_size)
    if rows:
        out.rows = _row_tensor([[examples[i] for i in members] for members in rows], block_size, pad)
    return out


def _row_tensor(rows: list[list[tuple[list[int], list[int]]]], block_size: int, pad: int) -> torch.Tensor:
    """[n_rows, 3, block_size]: ids, labels, and position ids that restart at 0 for each example and for the
    padding after them (padding is a segment of its own: it attends to nothing real and has no target)."""
    tensor = torch.full((len(rows), 3, block_size), -100, dtype=torch.long)
    tensor[:, 0] = pad
    for r, members in enumerate(rows):
        row_ids = [t for ids, _ in members for t in ids]
        row_labels = [t for _, labels in members for t in labels]
        positions = [p for ids, _ in members for p in range(len(ids))] + list(range(block_size - len(row_ids)))
        tensor[r, 0, :len(row_ids)] = torch.tensor(row_ids)
        tensor[r, 1, :len(row_labels)] = torch.tensor(row_labels)
        tensor[r, 2] = torch.tensor(positions)
    return tensor


# Attention implementations whose masks transformers builds from restarted position ids for any batch size.
PACKED_ATTENTION = ("sdpa", "eager")


def check_packed_attention(model, say=print) -> None:
    """Make `model` keep packed examples apart, or refuse it. An implementation outside `PACKED_ATTENTION`
    is switched to sdpa (eager where sdpa is not supported); then a 12-token probe checks that the second of
    two packed segments gets the hidden states it gets alone (architectures that build their own masks, such
    as OPT and Falcon, ignore the restarted position ids)."""
    impl = model.config._attn_implementation
    if impl not in PACKED_ATTENTION:
        for fallback in PACKED_ATTENTION:
            try:
                model.set_attn_implementation(fallback)
                break
            except (ValueError, ImportError):  # e.g. an architecture without sdpa support
                continue
        say(f"langgraft train: attention {impl!r} does not separate packed examples in batches of several "
            f"rows; using {model.config._attn_implementation!r}")
    body = getattr(model, model.base_model_prefix)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, 12), generator=torch.Generator().manual_seed(0))
    device = model.get_input_embeddings().weight.device
    ids = ids.to(device)
    restart = torch.tensor([list(range(6)) * 2], device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = body(input_ids=ids[:, 6:], use_cache=False).last_hidden_state.float()
        packed = body(input_ids=ids, position_ids=restart, use_cache=False).last_hidden_state[:, 6:].float()
        shared = body(input_ids=ids, use_cache=False).last_hidden_state[:, 6:].float()
    model.train(was_training)
    leak, mixing = (packed - alone).abs().max(), (shared - alone).abs().max()
    if leak > 0.05 * mixing + 1e-5 * alone.abs().max():
        raise UserError(f"model {model.config.model_type} (attention {model.config._attn_implementation!r}): "
                        "packed instruction examples would attend to each other (its attention ignores restarted "
                        "position ids); instruction tuning needs an architecture that isolates them")


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows of example indices: best-fit decreasing bin packing (longest first, each into the fullest row that
    still has room), O(n log n) with a sorted list of free space; indices inside a row in their original order.
    On the shared seed tasks (block 1024) real tokens fill 0.997 of the positions (packing in order: 0.79)."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        k = bisect.bisect_left(free, (lengths[i], -1))
        if k < len(free):
            room, r = free.pop(k)
        else:
            room, r = capacity, len(rows)
            rows.append([])
        rows[r].append(i)
        if room - lengths[i] > 0:
            bisect.insort(free, (room - lengths[i], r))
    return [sorted(members) for members in rows]
