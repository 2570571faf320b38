"""What `langgraft extend` may be told beyond its model, tokenizer and output: `ExtendOptions`, the source of its
CLI flags and of the recipe's `model_extend` section. Torch-free: every `langgraft` call builds the parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from langgraft.config import NonNegInt

# how new rows start (`model/init.py` implements each; docs/TRAINING.md compares them)
INIT_METHODS = ("shrunk-subtokens", "mean-subtokens", "mean", "random")


@dataclass
class ExtendOptions:
    # how new rows start (default: the mean of each new token's base pieces; shrunk-subtokens: that mean pulled
    # 1/4 toward the mean of all rows; docs/TRAINING.md)
    init: Literal[INIT_METHODS] = "mean-subtokens"
    seed: NonNegInt = 0  # seed for init random
    # proceed when the model folder has no tokenizer to check the extended one against (sizes only)
    trust_tokenizer: bool = False
