"""Cleaned records → output rows: the next-token training `text` of each kind (what `langgraft train` reads).

Bilingual formats (recorded in dataset.json as `format`):
  src_tgt     one row per pair: "{src}\\n{tgt}"
  both        two rows per pair: "{src}\\n{tgt}" and the reverse direction "{tgt}\\n{src}"
  translate   two rows per pair in a translation-prompt form, both directions (TRANSLATE below)
  interleave  `interleave_group` consecutive pairs of the same split per row, alternating languages:
              "{src1}\\n{tgt1}\\n{src2}\\n{tgt2}..."
Instructions: "{instruction}\\n\\n{input}\\n\\n{output}" (the input paragraph only when there is one); a conversation's
turns joined by blank lines. Every instruction row also carries `messages` (the chat turns).
"""

from __future__ import annotations

from typing import Iterable, Iterator

from langgraft.data.config import DatasetConfig
from langgraft.lang import display_name

TRANSLATE = "Translate from {src_name} to {tgt_name}:\n{src}\n{tgt}"


def render_rows(docs: Iterable, ds: DatasetConfig, tally: dict) -> Iterator[dict]:
    """Output rows (`text`, `lang` and the kind's own columns) plus `_split` (removed by the caller)."""
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        tally["docs"] = tally.get("docs", 0) + 1
        m = doc.metadata
        if ds.kind == "monolingual":
            yield {"text": doc.text, "lang": m["lang"], "_split": m["split"]}
        elif ds.kind == "instructions":
            yield _instruction_row(m)
        elif ds.format == "interleave":
            group = groups.setdefault(m["split"], [])
            group.append(m)
            if len(group) >= ds.interleave_group:
                yield _interleaved(group)
                groups[m["split"]] = []
        else:
            yield from _pair_rows(m, ds.format)
    for group in groups.values():
        if group:
            yield _interleaved(group)


def _instruction_row(m: dict) -> dict:
    """Every instruction row has both shapes: the chat `messages` and the first exchange as instruction/input/output
    (a conversation's first user turn and the assistant turn after it; `input` empty)."""
    if m.get("messages"):
        turns = m["messages"]
        roles = [t["role"] for t in turns]
        first_user = roles.index("user")
        reply = roles.index("assistant", first_user)
        instruction, inp, output = turns[first_user]["content"], "", turns[reply]["content"]
    else:
        instruction, inp, output = m["instruction"], m["input"], m["output"]
        turns = [{"role": "user", "content": f"{instruction}\n\n{inp}" if inp else instruction},
                 {"role": "assistant", "content": output}]
    return {"text": "\n\n".join(t["content"] for t in turns), "lang": m["lang"], "instruction": instruction,
            "input": inp, "output": output, "messages": turns, "_split": m["split"]}


def _pair(src: str, tgt: str, src_lang: str, tgt_lang: str, text: str, split: str) -> dict:
    return {"text": text, "lang": f"{src_lang}-{tgt_lang}", "src": src, "tgt": tgt, "src_lang": src_lang,
            "tgt_lang": tgt_lang, "_split": split}


def _pair_rows(m: dict, fmt: str) -> Iterator[dict]:
    directions = [(m["src"], m["tgt"], m["src_lang"], m["tgt_lang"])]
    if fmt in ("both", "translate"):
        directions.append((m["tgt"], m["src"], m["tgt_lang"], m["src_lang"]))
    for src, tgt, sl, tl in directions:
        if fmt == "translate":
            text = TRANSLATE.format(src_name=display_name(sl), tgt_name=display_name(tl), src=src, tgt=tgt)
        else:
            text = f"{src}\n{tgt}"
        yield _pair(src, tgt, sl, tl, text, m["split"])


def _interleaved(group: list[dict]) -> dict:
    text = "\n".join(f"{m['src']}\n{m['tgt']}" for m in group)
    first = group[0]
    return _pair("\n".join(m["src"] for m in group), "\n".join(m["tgt"] for m in group), first["src_lang"],
                 first["tgt_lang"], text, first["split"])
