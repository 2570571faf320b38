"""The files one stage writes for a later one to read: one module per file owns its reading, writing and checks.

- `new_tokens`: `new_tokens.json` (`tokenizer extend` → `extend` → `train rows=new` → `export`).
- `langgraft_json`: `langgraft.json` (`tokenizer train` / `tokenizer extend` → `tokenizer extend --add`).
"""
