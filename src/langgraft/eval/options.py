"""What one `langgraft eval` run may be told beyond its models, tasks and output: `EvalOptions`, the source of the
eval verb's flags and of the recipe's `eval` section (the `options` module makes both from these fields).

The module imports nothing heavy because every `langgraft` call builds the eval parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from langgraft.config import NonNegInt, PosFloat, PosInt, Range
from langgraft.eval.contamination import DEFAULT_THRESHOLD
from langgraft.options import option


@dataclass
class EvalOptions:
    limit: Optional[PosInt] = None  # evaluate only the first N examples of each task
    # with limit: a random N examples drawn with this seed instead of the first N
    sample_seed: Optional[NonNegInt] = option(None, metavar="SEED")
    # flag an example when at least this share of its word 8-grams occurs in the training data checked against
    # (1 = only whole copies)
    contamination_threshold: Annotated[float, Range(0, 1, lo_open=True)] = option(DEFAULT_THRESHOLD,
                                                                                   metavar="SHARE")
    shots: Optional[NonNegInt] = None  # in-context examples (default: each task's own)
    batch_size: PosInt = 16  # examples scored or generated together
    # torch device (default: cuda if available, else cpu; under a launcher each rank's own GPU); auto: one model
    # spread over every GPU (device_map="auto")
    device: Optional[str] = None
    max_new_tokens: Optional[PosInt] = None  # cap every generation task's budget
    chat: bool = False  # wrap prompts in the model's chat template (instruction-tuned models)
    repetition_penalty: PosFloat = 1.1  # generation tasks: greedy with this penalty (1 = none)
