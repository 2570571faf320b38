"""Normalise and filter one record; every drop returns a reason that ends up counted in stats.json.

Normalisation is the language module's (`langgraft.lang.get_language`), the same one the tokenizer records.
Language ID is py3langid's bundled model (offline; datatrove's LanguageFilter downloads a fastText model), run on
the first `langid_chars` characters — enough to tell Persian from Arabic, which share the script, and it keeps
py3langid from dominating the throughput. The repetition checks reuse datatrove's Gopher helpers; the top-2-gram
check only counts a 2-gram that occurs more than once and only in texts of 50+ words, so short texts (a verse, a
sentence) are not dropped for being short. The rest is a handful of comparisons, so it lives here rather than as one datatrove class per rule.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from langgraft.data.config import DatasetConfig, FilterConfig
from langgraft.lang import Language, get_language


# Below this many words the share of the top 2-gram is noise (a 10-word verse repeating "و خدا" once is 20%).
MIN_WORDS_NGRAM_CHECK = 50
SURE = 0.9  # language-ID probability on normalised text above which the raw text is not consulted


@dataclass
class Cleaner:
    """Everything one worker needs to clean a dataset's records (built once per task)."""

    kind: str
    filters: FilterConfig
    languages: dict[str, Language]
    boilerplate: list[re.Pattern] = field(default_factory=list)

    def lang(self, code: str) -> Language:
        return self.languages[code]


def make_cleaner(ds: DatasetConfig, normalizer: dict[str, dict], codes: set[str]) -> Cleaner:
    languages = {code: get_language(code, **normalizer.get(code, {})) for code in sorted(codes)}
    patterns = [re.compile(p) for p in ds.filters.boilerplate]
    return Cleaner(kind=ds.kind, filters=ds.filters, languages=languages, boilerplate=patterns)


@lru_cache(maxsize=None)
def _identifier(candidates: tuple[str, ...]):
    from py3langid import langid

    ident = langid.LanguageIdentifier.from_modelpath(langid.MODEL_DIR / langid.MODEL_FILE, norm_probs=True)
    if candidates:
        ident.set_languages(list(candidates))
    return ident


def identify(text: str, f: FilterConfig) -> tuple[str, float]:
    label, prob = _identifier(tuple(f.langid_candidates)).classify(text[: f.langid_chars])
    return str(label), float(prob)


def clean(fields: dict[str, str], lang_code: str, c: Cleaner, tally: dict) -> tuple[dict | None, str]:
    """Normalised fields, or (None, reason)."""
    if c.kind == "monolingual":
        return _clean_mono(fields["text"], c.lang(lang_code), c, tally)
    if c.kind == "bilingual":
        return _clean_pair(fields, c, tally)
    return _clean_instruction(fields, c.lang(lang_code), c)


def _clean_mono(raw: str, lang: Language, c: Cleaner, tally: dict) -> tuple[dict | None, str]:
    text = lang.normalize(raw)
    if c.boilerplate:
        lines = text.split("\n")
        kept = [line for line in lines if not any(p.search(line) for p in c.boilerplate)]
        if len(kept) != len(lines):
            tally["boilerplate_lines_removed"] = tally.get("boilerplate_lines_removed", 0) + len(lines) - len(kept)
            text = "\n".join(kept).strip()
    reason = _length(text, c.filters) or _script(text, lang, c.filters) or _repetition(text, c.filters)
    reason = reason or _langid(text, lang, c.filters, raw)
    return (None, reason) if reason else ({"text": text}, "")


def _clean_pair(fields: dict[str, str], c: Cleaner, tally: dict) -> tuple[dict | None, str]:
    src_lang, tgt_lang = c.languages[fields["src_lang"]], c.languages[fields["tgt_lang"]]
    src, tgt = src_lang.normalize(fields["src"]).strip(), tgt_lang.normalize(fields["tgt"]).strip()
    f = c.filters
    if not src or not tgt:
        return None, "empty_side"
    if src == tgt:
        return None, "identical_sides"
    if len(src) < f.min_chars or len(tgt) < f.min_chars:
        return None, "too_short"
    if max(len(src), len(tgt)) > f.max_length_ratio * min(len(src), len(tgt)):
        return None, "length_ratio"
    if src_lang.script_ratio(src) < f.min_script_ratio:
        return None, "wrong_script_src"
    if tgt_lang.script_ratio(tgt) < f.min_script_ratio:
        return None, "wrong_script_tgt"
    reason = _langid(src, src_lang, f, fields["src"]) or _langid(tgt, tgt_lang, f, fields["tgt"])
    if reason:
        return None, reason
    return {"src": src, "tgt": tgt, "src_lang": src_lang.code, "tgt_lang": tgt_lang.code}, ""


def _clean_instruction(fields: dict, lang: Language, c: Cleaner) -> tuple[dict | None, str]:
    if "messages" in fields:
        return _clean_conversation(fields["messages"], lang, c)
    out = {k: lang.normalize(fields[k]).strip() for k in ("instruction", "input", "output")}
    if not out["instruction"] or not out["output"]:
        return None, "empty_instruction_or_output"
    body = f"{out['instruction']}\n{out['output']}"
    raw = f"{fields['instruction']}\n{fields['output']}"
    reason = _length(body, c.filters) or _script(body, lang, c.filters) or _langid(body, lang, c.filters, raw)
    return (None, reason) if reason else (out, "")


def _clean_conversation(turns: list[dict], lang: Language, c: Cleaner) -> tuple[dict | None, str]:
    """A chat: every turn normalised; it needs a user turn and an assistant turn after it."""
    out = [{"role": t["role"], "content": lang.normalize(t["content"]).strip()} for t in turns]
    out = [t for t in out if t["content"]]
    roles = [t["role"] for t in out]
    if "user" not in roles or "assistant" not in roles[roles.index("user"):]:
        return None, "no_user_then_assistant_turn"
    body = "\n".join(t["content"] for t in out)
    raw = "\n".join(t["content"] for t in turns)
    reason = _length(body, c.filters) or _script(body, lang, c.filters) or _langid(body, lang, c.filters, raw)
    return (None, reason) if reason else ({"messages": out}, "")


def _length(text: str, f: FilterConfig) -> str:
    if len(text) < f.min_chars:
        return "too_short"
    if len(text) > f.max_chars:
        return "too_long"
    if len(text.split()) < f.min_words:
        return "too_few_words"
    return ""


def _script(text: str, lang: Language, f: FilterConfig) -> str:
    return "wrong_script" if lang.script_ratio(text) < f.min_script_ratio else ""


def _repetition(text: str, f: FilterConfig) -> str:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) > 1:
        dup_lines, _ = find_duplicates(lines)
        if dup_lines / len(lines) > f.max_dup_line_frac:
            return "repeated_lines"
    words = text.split()
    if len(words) >= MIN_WORDS_NGRAM_CHECK:
        # Gopher's top-2-gram share, counted on word pairs (no joined strings: 2x faster than get_n_grams).
        (first, second), count = Counter(zip(words, words[1:])).most_common(1)[0]
        if count > 1 and (len(first) + 1 + len(second)) * count / len(text) > f.max_top_ngram_frac:
            return "repeated_ngrams"
    return ""


def _langid(text: str, lang: Language, f: FilterConfig, raw: str = "") -> str:
    """Classify the normalised text; when that is unsure (< SURE), a raw text confidently in another language wins.

    Why both: normalising turns Arabic ي/ك into Persian ی/ک, after which real Arabic reads as "fa" at p≈0.5 while
    the raw text is "ar" at p>0.9. Raw Persian written with Arabic ي/ك (Fars News, The Little Prince file) reads as
    "ar"/"ps" too, but rarely confidently, and its normalised text is usually "fa" at p>0.9 — so the raw text only
    overturns an unsure decision, and only when it is sure itself. Texts shorter than `langid_min_chars` are not
    classified (py3langid is noise on a few words); the script filter still applies to them.
    """
    if not f.langid or len(text) < f.langid_min_chars:
        return ""
    if lang.is_unambiguous is not None and lang.is_unambiguous(raw or text):
        return ""  # e.g. Persian letters no other Arabic-script language writes: no model needed
    label, prob = identify(text, f)
    if label != lang.code:
        return f"langid_{label}"
    if prob < SURE and raw:
        raw_label, raw_prob = identify(raw, f)
        if raw_label != lang.code and raw_prob >= SURE:
            return f"langid_{raw_label}"
    return "" if prob >= f.langid_min_prob else "langid_low_confidence"
