"""One source per option: a verb's options dataclass makes its flags, their help, the recipe section and the
fingerprint; a new field shows up in all of them with no other edit."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import get_type_hints

import pytest

from langgraft.cli import build_parser, main
from langgraft.config import PosInt, describe, field_help
from langgraft.errors import UserError
from langgraft.options import add_flags, default_of, from_args, settings

from helpers import load_base_tokenizer, make_extended_tokenizer, save_tiny_model


def _parser(*verb: str):
    parser = build_parser()
    for word in verb:
        parser = next(a for a in parser._actions if a.dest in ("verb", "action")).choices[word]
    return parser


def _groups(cls: type) -> list[type]:
    """`cls` and the option groups nested in it (`ChatOptions.load`)."""
    hints = get_type_hints(cls)
    return [cls, *(g for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])
                   for g in _groups(hints[f.name]))]


def _leaves(cls: type) -> list[dataclasses.Field]:
    """Every field with a flag: nested option groups flattened."""
    return [f for g in _groups(cls) for f in dataclasses.fields(g)
            if not dataclasses.is_dataclass(get_type_hints(g)[f.name]) and f.metadata.get("flag", True)]


def _verbs():
    from langgraft.generate.batch import GenerateOptions
    from langgraft.generate.chat import ChatOptions
    from langgraft.eval.options import EvalOptions
    from langgraft.export.run import ExportOptions
    from langgraft.ggufio.read import ImportOptions
    from langgraft.model.generation import Sampling
    from langgraft.model.options import ExtendOptions
    from langgraft.tokenizer.report import ReportOptions
    from langgraft.tokenizer.train import TokenizerTrainOptions

    return [(("tokenizer", "train"), TokenizerTrainOptions), (("tokenizer", "report"), ReportOptions),
            (("extend",), ExtendOptions), (("export",), ExportOptions), (("eval",), EvalOptions),
            (("generate",), GenerateOptions), (("generate",), Sampling), (("chat",), ChatOptions),
            (("chat",), Sampling), (("import-gguf",), ImportOptions)]


@pytest.mark.parametrize("verb,cls", _verbs(), ids=[f"{' '.join(v)}:{c.__name__}" for v, c in _verbs()])
def test_every_option_field_is_a_flag_with_its_comment_as_help(verb, cls):
    actions = {a.dest: a for a in _parser(*verb)._actions}
    helps = {k: v for g in _groups(cls) for k, v in field_help(g).items()}
    for f in _leaves(cls):
        assert f.name in actions, f"{cls.__name__}.{f.name} has no flag on `langgraft {' '.join(verb)}`"
        action = actions[f.name]
        assert helps[f.name] and action.help.startswith(helps[f.name]), (f.name, action.help)
        expected = default_of(f)
        if isinstance(expected, dict):
            expected = [f"{k}={v}" for k, v in expected.items()]
        assert action.default == expected, f.name
    # no hand-written flag says the same thing as a field
    hand = [a for a in actions.values() if a.help and a.dest not in helps]
    for a in hand:
        assert a.help not in helps.values(), a.dest


def test_recipe_sections_are_the_verbs_options():
    from langgraft.eval.options import EvalOptions
    from langgraft.model.options import ExtendOptions
    from langgraft.pipeline.table import Recipe
    from langgraft.tokenizer.train import TokenizerTrainOptions

    keys = {row[0]: row for row in describe(Recipe)}
    for section, cls in (("tokenizer", TokenizerTrainOptions), ("model_extend", ExtendOptions),
                         ("eval", EvalOptions)):
        helps = field_help(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            assert key in keys, key
            assert keys[key][2] == default_of(f) and keys[key][3] == helps[f.name], key


def test_a_new_field_reaches_flag_help_check_and_fingerprint():
    """The machinery a verb uses, on an options class with one more field than a real one."""
    import argparse

    from langgraft.tokenizer.train import TokenizerTrainOptions

    @dataclass
    class Wider(TokenizerTrainOptions):
        shiny: PosInt = 3  # how shiny the new knob is

    p = argparse.ArgumentParser()
    add_flags(p, Wider)
    assert "how shiny the new knob is (default: 3)" in p.format_help()
    args = p.parse_args(["--shiny", "5", "--normalizer", "digits=latin", "zwnj_repair=false"])
    opts = from_args(Wider, args)
    assert (opts.shiny, opts.normalizer) == (5, {"digits": "latin", "zwnj_repair": False})
    assert settings(opts)["shiny"] == 5 and "threads" not in settings(opts)  # threads change no output
    with pytest.raises(SystemExit):
        p.parse_args(["--shiny", "0"])  # its Range, from its type


def test_tokenizer_train_fingerprint_holds_every_setting(tmp_path, capsys):
    from langgraft.demo import demo_file
    from langgraft.rundir import read_manifest
    from langgraft.tokenizer.train import TokenizerTrainOptions

    out = tmp_path / "sp"
    assert main(["tokenizer", "train", "--input", str(demo_file("fa.txt")), "--lang", "fa", "--vocab-size", "400",
                 "--max-sentences", "5000", "--threads", "1", "--out", str(out)]) == 0
    config = read_manifest(out)["config"]
    recorded = settings(TokenizerTrainOptions(vocab_size=400, max_sentences=5000, threads=1))
    for key, value in recorded.items():
        if key != "normalizer":  # recorded resolved (every option of the language's normaliser)
            assert config[key] == value, key
    assert main(["tokenizer", "train", "--input", str(demo_file("fa.txt")), "--lang", "fa", "--vocab-size", "400",
                 "--max-sentences", "5000", "--threads", "2", "--out", str(out)]) == 0
    assert "up to date, skipped" in capsys.readouterr().out  # threads: not part of the fingerprint
    assert main(["tokenizer", "train", "--input", str(demo_file("fa.txt")), "--lang", "fa", "--vocab-size", "400",
                 "--max-sentences", "4000", "--threads", "1", "--out", str(out)]) == 0
    assert read_manifest(out)["config"]["max_sentences"] == 4000


def test_extend_fingerprint_holds_every_setting(tmp_path, data_dir):
    from langgraft.model.extend import extend_model
    from langgraft.model.options import ExtendOptions

    tok = make_extended_tokenizer(data_dir, "mistral", tmp_path / "tok", n_new=8)
    base = save_tiny_model("llama", load_base_tokenizer(data_dir, "mistral", tmp_path / "bt"), tmp_path / "base",
                           hidden=16, layers=1)
    opts = ExtendOptions(init="random", seed=7)
    first = extend_model(base, tok, out=tmp_path / "ext", opts=opts)
    config = json.loads((tmp_path / "ext" / "manifest.json").read_text())["config"]
    assert {k: config[k] for k in settings(opts)} == settings(opts)
    assert not first.skipped and extend_model(base, tok, out=tmp_path / "ext", opts=opts).skipped
    # a keyword is a field of the same options (the Python API mirrors the flags); the checks are the config's
    assert not extend_model(base, tok, out=tmp_path / "ext", opts=opts, seed=8).skipped
    with pytest.raises(UserError, match="init"):
        extend_model(base, tok, out=tmp_path / "ext2", init="zeros")
    with pytest.raises(UserError, match="unknown key"):
        extend_model(base, tok, out=tmp_path / "ext2", inti="mean")


def test_bad_flag_values_are_one_line(capsys):
    for argv in (["tokenizer", "train", "--input", "x", "--lang", "fa", "--vocab-size", "0", "--out", "o"],
                 ["generate", "--model", "m", "--input", "i", "--out", "o", "--top-p", "1.5"],
                 ["report-nothing"], ["extend", "--model", "m", "--tokenizer", "t", "--out", "o", "--init", "zero"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("langgraft: error:"), err


def test_sweep_takes_a_comma_list_or_several_values():
    p = _parser("tokenizer", "report")
    common = ["--tokenizer", "a=x", "--text", "fa=y", "--out", "o"]
    from langgraft.tokenizer.report import ReportOptions

    for given in (["--sweep", "100,200"], ["--sweep", "100", "200"]):
        assert from_args(ReportOptions, p.parse_args(common + given)).sweep == [100, 200]


def test_help_text_of_a_field_made_without_source_comes_from_its_metadata():
    from langgraft.pipeline.table import Recipe

    helps = field_help(Recipe)
    assert helps["out"].startswith("output folder") and helps["model_extend"].startswith("`extend`")
