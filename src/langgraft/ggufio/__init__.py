"""GGUF files in and out of langgraft.

`read.py` is `langgraft import-gguf`; `write.py` is `langgraft export --gguf`. Both go through the gguf
package (an optional dependency), imported by `gguf_module`.
"""

from __future__ import annotations

from langgraft.errors import UserError


def gguf_module(doing: str = "reading"):
    """The gguf package, or one line saying how to install it (an optional dependency: `.[real]`); `doing` is
    what needed it: "reading" (import-gguf) or "writing" (export --gguf)."""
    try:
        import gguf
    except ImportError:
        raise UserError(f"{doing} GGUF files needs the gguf package: pip install 'langgraft[real]'") from None
    return gguf
