"""What one `langgraft eval` run may be told: `EvalOptions`, the one home of its defaults.

The CLI flags and the recipe's eval section take their defaults from here; the module imports nothing heavy
because every `langgraft` call builds the eval parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraft.eval.contamination import DEFAULT_THRESHOLD


@dataclass
class EvalOptions:
    limit: int | None = None  # first N examples of each task (a random N with sample_seed)
    sample_seed: int | None = None  # with limit: draw the N examples at random with this seed
    contamination_threshold: float = DEFAULT_THRESHOLD  # flag at least this share of 8-grams seen in training
    shots: int | None = None  # in-context examples (None: each task's own)
    batch_size: int = 16  # examples scored or generated together
    device: str | None = None  # None: cuda if available, else cpu
    max_new_tokens: int | None = None  # cap on every generation task's budget
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruction-tuned models)
    repetition_penalty: float = 1.1  # generation tasks (greedy); 1.0 = none
