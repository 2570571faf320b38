"""Persian (fa): the normaliser applied before tokenizer training and corpus filtering, and the script ranges.

What `normalize` does, in this order (each step is a `str.translate` table or one compiled regex, built once per
config and cached):
1. Letters written with a combining hamza/madda are composed (ه+ٔ → ۀ, ی+ٔ → ئ, و+ٔ → ؤ, ا+ٔ → أ, ا+ٓ → آ,
   ا+ٕ → إ) so that step 3 does not lose the hamza.
2. Arabic / Urdu letter variants become the Persian letters: ي ى ۍ ې ے → ی, ك ڪ → ک, ە ھ ہ → ه, ۂ → ۀ.
   Policy for the ezafe "heh with yeh/hamza above": the single code point ۀ (U+06C0) is kept as written and the
   two-code-point spelling هٔ becomes ۀ (they render identically); «ه‌ی» is a different, equally correct spelling
   and is left alone. Hamza letters (أ إ ؤ ئ ء) and ة are real Persian spellings and are kept.
3. Combining marks of the Arabic blocks (harakat, tanwin, shadda, sukun, superscript alef, Quranic annotation
   marks) and tatweel (ـ) are removed; so are the invisible bidi controls (LRM, RLM, ALM, embeddings/isolates) and
   the BOM. Arabic presentation forms (U+FB50–FDFF, U+FE70–FEFF) become base letters: NFKC applied to those code
   points only (then steps 2–3 on the result), never to the whole text — NFKC elsewhere would rewrite English
   (ligatures, full-width forms, superscripts) and nothing here touches ZWNJ.
4. Digits by policy `digits`: "keep" (default, as written), "latin" (٠-٩ and ۰-۹ → 0-9) or "persian"
   (0-9 and ٠-٩ → ۰-۹; note this also rewrites digits inside English text).
5. Whitespace: every run of whitespace becomes one space; `newlines="keep"` (default) keeps line breaks (and drops
   the spaces around them), `newlines="space"` turns them into spaces too. Leading/trailing spaces go.
6. Stand-ins next to Arabic-script text: a soft hyphen (U+00AD) or zero-width space (U+200B) there is a ZWNJ
   typed on the wrong key («سال\u00adهای» is common in the news data) and becomes one; a ZWJ (U+200D) there is
   noise («ت\u200dاثیر») and goes. Elsewhere (English, emoji ZWJ sequences) they are left alone.
   Then ZWNJ (U+200C) clean-up (step 6 runs just before step 5, so a dropped ZWNJ leaves no double space):
   repeated ZWNJ collapse to one; a ZWNJ is dropped unless it stands between an Arabic-script letter that joins
   to the left and another Arabic-script letter (next to a space, digit, Latin letter, punctuation or after
   ا د ذ ر ز ژ و … it changes nothing on screen, only the tokenisation).
7. ZWNJ repair (`zwnj_repair=True`, default): «می روم» → «می‌روم», «نمی روم» → «نمی‌روم» (a free-standing
   می/نمی before a word of ≥ 2 letters), and the suffixes «ها/های/هایی/هایم/…/هایشان», «تر», «ترین» written as
   separate words are attached («کتاب ها» → «کتاب‌ها», «بزرگ تر» → «بزرگ‌تر», «در ها» → «درها»). Joined forms
   («میروم») are left alone: telling them from «میز», «میلیون» needs a lexicon. Known misses: «می» (wine) before
   a noun in poetry and «تر» (wet) after a noun get attached.
English (and any text without Arabic-script characters) passes through unchanged except for whitespace runs and
the digits policy.

Library vs own code: hazm pins numpy 1.24 and cannot live with this stack. shekar 1.7.0 installs cleanly and its
`Normalizer` has good lexicon-checked ZWNJ rules, but measured on 3,000 Fars news lines it runs at ~1.0 MB/s
(the corpus pipeline needs normalise+filter+dedup ≥ 10 MB/s on 2 cores), it pulls onnxruntime, and its default
pipeline rewrites English and code: "Hello, world? 3.14" → "Hello، world؟ ۳. ۱۴", "x*2" → "x*۲", "ı" → "۱",
"f(x)" → "f (x)". Its steps are not configurable enough to switch that off without reimplementing the pipeline,
so this module is hand-written: translate tables + a few regexes, 24–36× faster than shekar's `Normalizer` on
the same news text (`python bench/normalize_fa.py`, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

from langgraft.lang.common import Language, check_options, make_script_ratio, ranges_class, whitespace_collapser

ZWNJ = "\u200c"
DEFAULTS = {"digits": "keep", "newlines": "keep", "zwnj_repair": True}
CHOICES = {"digits": ("keep", "latin", "persian"), "newlines": ("keep", "space"), "zwnj_repair": None}

# Target-script characters (script ratio, the tokenizer extension's target block): the Arabic-script blocks
# (Arabic, Supplement, Extended-A, Presentation Forms A and B): raw Persian text also carries Arabic letters and
# presentation forms.
TARGET_RANGES = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))
TARGET_CHARS = frozenset(chr(cp) for a, b in TARGET_RANGES for cp in range(a, b + 1))
TARGET_LETTERS = frozenset(
    ch for ch in TARGET_CHARS if unicodedata.category(ch)[0] in "LM" and ch != "\u0640"  # tatweel is not a letter
)
TARGET_CLASS = "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in TARGET_RANGES)

_LETTER_MAP = {
    "ی": "يىۍېے", "ک": "كڪ", "ه": "ەھہ", "ۀ": "ۂ",
}
_COMPOSE = {
    "ه\u0654": "ۀ", "ە\u0654": "ۀ", "ی\u0654": "ئ", "ي\u0654": "ئ", "و\u0654": "ؤ", "ا\u0654": "أ",
    "ا\u0653": "آ", "ا\u0655": "إ",
}
_BIDI_AND_BOM = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_ARABIC_DIGITS, _PERSIAN_DIGITS, _LATIN_DIGITS = "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "0123456789"
# Arabic-script letters that do not join to the following letter: a ZWNJ after them is invisible.
_NON_LEFT_JOINING = "ءآأؤإاةدذرزژوۀٱٲٳٵڈډڊڋڌڍڎڏڐڑڒړڔڕږڗڙۃۄۅۆۇۈۉۊۋۏۮۯەۓ"
_PLURAL_COMPARATIVE = ("هایشان", "هایتان", "هایمان", "هایی", "هایم", "هایت", "هایش", "های", "ها", "ترین", "تر")


def is_target_char(ch: str) -> bool:
    return ch in TARGET_CHARS


def is_target_letter(ch: str) -> bool:
    return ch in TARGET_LETTERS


script_ratio = make_script_ratio(TARGET_CLASS)


def language(**options) -> Language:
    config = check_options("fa", options, DEFAULTS, CHOICES)
    return Language(code="fa", normalize=make_normalizer(**config), normalizer_config=config,
                    is_target_char=is_target_char, is_target_letter=is_target_letter, script_ratio=script_ratio,
                    is_unambiguous=is_unambiguous)


# Letters Persian writes and Arabic does not, and letters of the other languages sharing the script (Arabic ة ۃ,
# Urdu, Pashto, Sorani, Sindhi, Uyghur, Kurdish ڤ) that Persian text does not use. Raw text with at least two of the
# first and none of the second is Persian without asking a language-ID model: that model is half of the corpus
# pipeline's cleaning time, and Persian prose of 50+ characters nearly always has a پ, چ, ژ or گ.
_PERSIAN_ONLY = re.compile("[پچژگ]")
_OTHER_LANGUAGES = re.compile("[ةۃٹڈڑںےۓھټډړښږځڅۍېڼێۆڵڕەڄڃڇڊڌڍڎڏڙڦڪڻڳڱۇۈۋڤ]")


def is_unambiguous(text: str, window: int = 2000) -> bool:
    """Raw text (its first `window` characters) is Persian by its letters alone; False means "ask a model"."""
    head = text[:window]
    if _OTHER_LANGUAGES.search(head):
        return False
    first = _PERSIAN_ONLY.search(head)
    return first is not None and _PERSIAN_ONLY.search(head, first.end()) is not None


@lru_cache(maxsize=None)
def make_normalizer(digits: str, newlines: str, zwnj_repair: bool) -> Callable[[str], str]:
    table = _char_table(digits)
    # The three variants that make up nearly all of what the table changes in real text go through str.replace
    # (a memchr scan, ~1 GB/s); the full translate (~30 MB/s) only runs when a rarer character is present.
    common = {"ي": "ی", "ك": "ک", "ى": "ی"}
    rare = re.compile(f"[{ranges_class(sorted(set(table) - {ord(c) for c in common} | {0xAD, 0x200B, 0x200D}))}]")
    collapse = whitespace_collapser(newlines)
    compose = re.compile("|".join(_COMPOSE))
    letters = frozenset(ch for ch in TARGET_LETTERS if unicodedata.category(ch) == "Lo")
    joiners = letters - frozenset(_NON_LEFT_JOINING)
    letter_class = ranges_class(sorted(ord(c) for c in letters))
    # Patterns start with a literal so `re` can skip ahead quickly; the context checks are done in the callbacks.
    zwnj_runs = re.compile(f"{ZWNJ}+")
    near_script = f"[{TARGET_CLASS}{ZWNJ}]"
    zwj = re.compile(f"(?<={near_script})\u200d+|\u200d+(?={near_script})")
    zwnj_standins = re.compile(f"(?<={near_script})[\u00ad\u200b]+|[\u00ad\u200b]+(?={near_script})")
    mi_space = re.compile(f"می (?=[{letter_class}]{{2}})")
    suffix_space = re.compile(f" ({'|'.join(_PLURAL_COMPARATIVE)})(?![{letter_class}{ZWNJ}])")

    def fix_zwnj(m: re.Match) -> str:
        text, start, end = m.string, m.start(), m.end()
        keep = start > 0 and text[start - 1] in joiners and end < len(text) and text[end] in letters
        return ZWNJ if keep else ""

    def join_mi(m: re.Match) -> str:
        text, start = m.string, m.start()
        before = text[start - 1] if start else ""
        if before == "ن":  # نمی
            before = text[start - 2] if start > 1 else ""
        return m.group(0) if before in letters or before == ZWNJ else "می" + ZWNJ

    def attach_suffix(m: re.Match) -> str:
        text, start = m.string, m.start()
        if start < 2 or text[start - 1] not in letters or text[start - 2] not in letters:
            return m.group(0)
        return (ZWNJ if text[start - 1] in joiners else "") + m.group(1)

    def normalize(text: str) -> str:
        if rare.search(text):  # one scan decides whether the rarer steps run at all
            if "\u0654" in text or "\u0653" in text or "\u0655" in text:
                text = compose.sub(lambda m: _COMPOSE[m.group(0)], text)
            text = text.translate(table)
            if "\u00ad" in text or "\u200b" in text or "\u200d" in text:
                text = zwnj_standins.sub(ZWNJ, zwj.sub("", text))
        for src, dst in common.items():
            if src in text:
                text = text.replace(src, dst)
        if ZWNJ in text:  # before the whitespace collapse: dropping a ZWNJ can leave two spaces side by side
            text = zwnj_runs.sub(fix_zwnj, text)
        text = collapse(text)
        if zwnj_repair:
            if "می " in text:
                text = mi_space.sub(join_mi, text)
            if " ها" in text or " تر" in text:
                text = suffix_space.sub(attach_suffix, text)
        return text

    return normalize


def _char_table(digits: str) -> dict[int, str | None]:
    """One translate table for steps 2–4: letter variants, removed marks/controls, presentation forms, digits."""
    table: dict[int, str | None] = {}
    for target, variants in _LETTER_MAP.items():
        table.update({ord(v): target for v in variants})
    for ch in TARGET_CHARS:
        if unicodedata.category(ch) == "Mn":
            table[ord(ch)] = None
    table[0x0640] = None  # tatweel
    table.update({ord(ch): None for ch in _BIDI_AND_BOM})
    if digits == "latin":
        table.update({ord(d): lat for src in (_ARABIC_DIGITS, _PERSIAN_DIGITS) for d, lat in zip(src, _LATIN_DIGITS)})
    elif digits == "persian":
        table.update({ord(d): fa for src in (_ARABIC_DIGITS, _LATIN_DIGITS) for d, fa in zip(src, _PERSIAN_DIGITS)})
    base = dict(table)
    for a, b in ((0xFB50, 0xFDFF), (0xFE70, 0xFEFE)):
        for cp in range(a, b + 1):
            ch = chr(cp)
            folded = unicodedata.normalize("NFKC", ch)
            if folded != ch:
                # Isolated-mark forms fold to " ً": after dropping the mark only the space is left, which goes too.
                table[cp] = folded.translate(base).strip(" ") or None
    return table
