"""Leak guard: hashes of normalised evaluation texts, and the after-the-fact overlap check on prepared data.

An evaluation text matches a training record when its normalised form equals the record's text, one of its
fields, or one of their lines (engine.leak_keys). Eval texts (and their lines) shorter than `min_chars` are not
indexed: generic snippets such as "خیلی خوب بود" would otherwise knock out unrelated documents.
"""

from __future__ import annotations

from pathlib import Path

from langgraft.data.config import DatasetConfig, LeakGuardConfig, PrepareConfig
from langgraft.data.engine import content_hash, leak_keys
from langgraft.data.readers import explode, expand_paths, field_text, plan_units, read_unit
from langgraft.lang import get_language


def eval_texts(cfg: PrepareConfig) -> dict[str, list[str]]:
    """Normalised eval texts and lines (≥ min_chars) per eval set name."""
    guard: LeakGuardConfig = cfg.leak_guard
    root = Path(cfg.root)
    out: dict[str, list[str]] = {}
    for ev in guard.eval_sets:
        lang_code = ev.source.lang or "fa"
        lang = get_language(lang_code, **cfg.normalizer.get(lang_code, {}))
        texts: list[str] = []
        # Plan as a one-source monolingual dataset so every reader (and its error messages) is shared.
        ds = DatasetConfig(name=f"leak_guard.{ev.name}", sources=[ev.source])
        for unit in plan_units(ds, root, chunk_bytes=1 << 62):
            for record, where in read_unit(unit, ev.source, False, {}):
                for rec in explode(record, ev.source.records, where):
                    for name in ev.fields:
                        value = field_text(rec, name, where)
                        for part in [value, *value.split("\n")]:
                            norm = lang.normalize(part).strip()
                            if len(norm) >= guard.min_chars:
                                texts.append(norm)
        out[ev.name] = texts
    return out


def build_index(cfg: PrepareConfig, path: Path) -> dict[str, int]:
    """Write the sorted unique hashes to `path` (.npy); return how many texts each eval set contributed."""
    import numpy as np

    texts = eval_texts(cfg)
    hashes = sorted({content_hash(t) for ts in texts.values() for t in ts})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(hashes, dtype=np.uint64))
    return {name: len(ts) for name, ts in texts.items()}


def overlap(train_texts, index: set[int]) -> int:
    """How many training rows share a text or a line with the eval index (must be 0 after prepare)."""
    return sum(1 for parts in train_texts if any(h in index for h in leak_keys(parts)))


def expand_eval_paths(cfg: PrepareConfig) -> list[Path]:
    paths: list[Path] = []
    for i, ev in enumerate(cfg.leak_guard.eval_sets):
        if ev.source.reader != "hf":
            paths += expand_paths(ev.source.path, Path(cfg.root), f"leak_guard.eval_sets[{i}].source")
    return paths
