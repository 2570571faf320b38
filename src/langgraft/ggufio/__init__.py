"""GGUF files in: `read.py` is `langgraft import-gguf`.

`gguf_module` is shared with the writer (`export/gguf.py`, `langgraft export --gguf`), which sits above this
package and imports it from here; both go through the gguf package, an optional dependency.
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
