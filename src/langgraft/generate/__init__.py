"""Generating text from a model: `chat.py` is `langgraft chat` (a conversation on the terminal), `batch.py` is
`langgraft generate` (a JSONL file of prompts, resumable). Both sample through `model.generation`, which stays in
`model/` because evaluation (below this package) generates with it too."""
