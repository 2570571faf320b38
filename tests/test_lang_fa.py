"""Persian and English language modules on real text from ../shared/data."""

from __future__ import annotations

import csv
import json
import pickle
import re
import unicodedata

import pytest

from langgraft.errors import UserError
from langgraft.lang import fa as fa_module, get_language
from helpers import news_texts, persian_lines

ZWNJ = "\u200c"


def fars_paragraphs(data_dir, files=(1,)) -> list[str]:
    return [t for i in files for t in news_texts(data_dir, f"news/fars-news-{i}.json")]


def english_lines(data_dir) -> list[str]:
    lines = [line.split(" ", 1)[1] for line in (data_dir / "sst2/data/stsa.binary.dev").read_text().splitlines()]
    lines += (data_dir / "parsinlu/data/translation/quran/en.yusufali.txt").read_text().splitlines()[:2000]
    with open(data_dir / "rte/RTE/dev.tsv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            lines += [row["sentence1"], row["sentence2"]]
    for line in (data_dir / "self_instruct/data/seed_tasks.jsonl").read_text().splitlines():
        task = json.loads(line)
        lines += [task["instruction"]] + [inst["output"] for inst in task["instances"]]
    return lines


@pytest.fixture(scope="module")
def fa():
    return get_language("fa")


def test_fars_news_arabic_letters_become_persian(fa, data_dir):
    raw = "\n".join(fars_paragraphs(data_dir))
    assert raw.count("ي") > 1000 and raw.count("ك") > 1000  # the data really has Arabic yeh/kaf
    out = fa.normalize(raw)
    for arabic in "يكى\u0640":
        assert arabic not in out
    assert not any(unicodedata.category(ch) == "Mn" for ch in out)  # harakat gone
    assert out.count("ی") == raw.count("ی") + raw.count("ي") + raw.count("ى")
    assert out.count("ک") == raw.count("ک") + raw.count("ك")
    # ZWNJ inside words survives (only stray ones are dropped)
    assert out.count(ZWNJ) > 0.9 * raw.count(ZWNJ)
    assert not re.search(f"{ZWNJ}(\\s|$)|(^|\\s){ZWNJ}|{ZWNJ}{ZWNJ}", out)


def test_normalize_is_idempotent_on_news(fa, data_dir):
    texts = fars_paragraphs(data_dir, files=(2,))
    assert len(texts) > 3000  # titles, abstracts and paragraphs of one news file
    for text in texts:
        once = fa.normalize(text)
        assert fa.normalize(once) == once


@pytest.mark.parametrize("raw, expected", [
    ("من می روم و او نمی رود", f"من می{ZWNJ}روم و او نمی{ZWNJ}رود"),
    ("کتاب ها و خانه های بزرگ تر و بزرگ ترین", f"کتاب{ZWNJ}ها و خانه{ZWNJ}های بزرگ{ZWNJ}تر و بزرگ{ZWNJ}ترین"),
    ("در ها باز است", "درها باز است"),  # after a non-joining letter ZWNJ is invisible: join directly
    (f"کتاب{ZWNJ}{ZWNJ}ها", f"کتاب{ZWNJ}ها"),
    (f"رفت{ZWNJ} و {ZWNJ}آمد{ZWNJ}", "رفت و آمد"),
    (f"کار{ZWNJ}ها", "کارها"),
    ("سال\u00adهای پیشرفت\u00ad هایی که می \u00adشود", f"سال{ZWNJ}های پیشرفت{ZWNJ}هایی که می{ZWNJ}شود"),
    (f"ت\u200dاثیر بی{ZWNJ}\u200d{ZWNJ}دفاع", f"تاثیر بی{ZWNJ}دفاع"),
    ("co\u00adoperate 👨\u200d👩\u200d👧", "co\u00adoperate 👨\u200d👩\u200d👧"),  # not Persian context: kept
    ("کمی روشن", "کمی روشن"),  # «می» inside a word is not a prefix
    ("شمیم رفت", "شمیم رفت"),
    ("می و معشوق", "می و معشوق"),  # a one-letter word after «می» is not a verb stem
    ("ترکیه و تهران", "ترکیه و تهران"),  # words that merely start with «تر» stay separate
])
def test_zwnj_repair(fa, raw, expected):
    assert fa.normalize(raw) == expected


def test_zwnj_repair_can_be_switched_off():
    lang = get_language("fa", zwnj_repair=False)
    assert lang.normalize("من می روم") == "من می روم"
    assert lang.normalizer_config["zwnj_repair"] is False


def test_diacritics_tatweel_composition_and_presentation_forms(fa):
    assert fa.normalize("كِتَابٌ") == "کتاب"
    assert fa.normalize("بـــزرگ") == "بزرگ"
    assert fa.normalize("خانه\u0654 ما") == "خانۀ ما"  # hamza above is kept by composing, not dropped
    assert fa.normalize("ا\u0653ب") == "آب"
    assert fa.normalize("\ufefb \ufdf2 \ufe91\ufeae") == "لا الله بر"  # ligatures / contextual forms
    assert fa.normalize("\u200fسلام\u200e\ufeff") == "سلام"  # bidi marks and BOM


def test_digit_policies():
    text = "سال 2023 و ۱۴۰۲ و ٤٥"
    assert get_language("fa").normalize(text) == text
    assert get_language("fa", digits="latin").normalize(text) == "سال 2023 و 1402 و 45"
    assert get_language("fa", digits="persian").normalize(text) == "سال ۲۰۲۳ و ۱۴۰۲ و ۴۵"


def test_whitespace_and_newlines():
    assert get_language("fa").normalize("  سلام \t  دنیا \r\n\n  خوب  ") == "سلام دنیا\n\nخوب"
    assert get_language("fa", newlines="space").normalize("سلام\n\nدنیا") == "سلام دنیا"


def test_english_passes_through_unchanged(fa, data_dir):
    en = get_language("en")
    # the claim is about text without Arabic-script characters (one self-instruct output quotes Arabic)
    lines = [line for line in english_lines(data_dir) if not any(map(fa.is_target_char, line))]
    assert len(lines) > 3500
    for line in lines:
        # only whitespace runs may change, exactly as the English normaliser does
        assert fa.normalize(line) == en.normalize(line), line
    unchanged = sum(fa.normalize(line) == line for line in lines)
    assert unchanged > 0.95 * len(lines)
    assert fa.normalize("Hello, world? It's 3.14 (GitHub) x*2 ı, f(x); 100%") == \
        "Hello, world? It's 3.14 (GitHub) x*2 ı, f(x); 100%"


def test_script_knowledge(fa, data_dir):
    assert fa.is_target_char("ی") and fa.is_target_char("،") and fa.is_target_char("۱")
    assert fa.is_target_char("\ufefb") and not fa.is_target_char("a") and not fa.is_target_char(ZWNJ)
    assert fa.is_target_letter("ی") and fa.is_target_letter("\u064e")  # letters and combining marks
    assert not fa.is_target_letter("۱") and not fa.is_target_letter("،") and not fa.is_target_letter("؟")
    persian = [fa.normalize(t) for t in fars_paragraphs(data_dir)[:200]]
    assert sum(fa.script_ratio(t) > 0.9 for t in persian) > 190
    assert all(fa.script_ratio(line) == 0.0 for line in english_lines(data_dir)[:500])
    assert fa.script_ratio("سلام hello 123 !!") == pytest.approx(4 / 9)
    assert fa.script_ratio("123 ،!") == 0.0
    en = get_language("en")
    assert en.is_target_char("a") and not en.is_target_char("ی")
    assert en.script_ratio("hello سلام") == pytest.approx(5 / 9)


def test_language_pickles_for_worker_processes():
    lang = get_language("fa", digits="persian")
    again = pickle.loads(pickle.dumps(lang))
    assert again.code == "fa" and again.normalizer_config == lang.normalizer_config
    assert again.normalize("كتاب 12") == "کتاب ۱۲"


def test_config_round_trip_and_errors():
    lang = get_language("fa", digits="latin")
    json.dumps(lang.normalizer_config)
    again = get_language("fa", **lang.normalizer_config)
    assert again.normalizer_config == lang.normalizer_config == {"digits": "latin", "newlines": "keep",
                                                                  "zwnj_repair": True}
    with pytest.raises(UserError, match="digit"):
        get_language("fa", digit="latin")
    with pytest.raises(UserError, match="digits='arabic'"):
        get_language("fa", digits="arabic")
    with pytest.raises(UserError, match="zwnj_repair"):
        get_language("fa", zwnj_repair="yes")
    with pytest.raises(UserError, match="'xx'"):
        get_language("xx")


def test_unambiguous_persian_by_letters(data_dir):
    # Sentences written for this test: Persian, Arabic (with and without ة), Urdu, English.
    assert fa_module.is_unambiguous("دیروز به بازار رفتم و چند کتاب خریدم که بسیار گران بود")
    assert not fa_module.is_unambiguous("ذهبت الطالبة إلى المدرسة في الصباح الباكر لكي تدرس مع زميلاتها")
    assert not fa_module.is_unambiguous("كان الجو جميلا في ذلك اليوم وخرج الناس إلى الحدائق")
    assert not fa_module.is_unambiguous("میں کل بازار گیا تھا اور وہاں سے کچھ پھل خریدے")
    assert not fa_module.is_unambiguous("The weather was lovely and people went to the gardens.")
    lines = [line for line in persian_lines(data_dir, None) if len(line) >= 50]
    assert sum(map(fa_module.is_unambiguous, lines)) / len(lines) > 0.6  # single sentences; the rest → model
    paragraphs = [p for p in fars_paragraphs(data_dir) if len(p) >= 300]
    assert sum(map(fa_module.is_unambiguous, paragraphs)) / len(paragraphs) > 0.95
    assert get_language("fa").is_unambiguous is fa_module.is_unambiguous and get_language("en").is_unambiguous is None
