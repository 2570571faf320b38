"""The arguments of each CLI verb: one `*_args(parser)` builder per verb, as `cli.VERBS` lists them.

A verb's settings come from its options dataclass (`options.add_flags`: the flags, their types, defaults and help
are that class's fields and comments); what is written here by hand are the verb's inputs and output. Only
argparse and torch-free modules are imported: every `langgraft` call (`--help` included) builds every verb's
parser.
"""

from __future__ import annotations

import argparse
from typing import Callable

from langgraft.eval.options import EvalOptions
from langgraft.options import add_flags
from langgraft.tokenizer.report import ReportOptions
from langgraft.tokenizer.train import TokenizerTrainOptions
from langgraft.train.config import STAGES as TRAIN_STAGES


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="rebuild even if --out is up to date (only an output of this verb is replaced)")


def tokenizer_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help=".txt (a document per line), .jsonl, or a `data prepare` dataset folder: DIR (its train "
                        "split) or DIR:SPLIT")
    p.add_argument("--lang", required=True, help="language code, e.g. fa")
    add_flags(p, TokenizerTrainOptions)
    p.add_argument("--out", required=True, help="output directory")
    _force_arg(p)


def tokenizer_extend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="HF tokenizer dir, tokenizer.model (SentencePiece or tiktoken), "
                                                  "or vocab.json+merges.txt dir")
    p.add_argument("--add", required=True, help="SentencePiece model (or `tokenizer train` output dir)")
    p.add_argument("--lang", required=True, help="language code, e.g. fa")
    p.add_argument("--out", required=True, help="output HF tokenizer directory")
    _force_arg(p)


def tokenizer_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", nargs="+", required=True, metavar="NAME=PATH",
                   help="tokenizers to compare (HF dir, tokenizer.model, vocab.json+merges.txt dir)")
    p.add_argument("--text", nargs="+", required=True, metavar="LANG=FILE",
                   help=".txt (a line each), .jsonl, or a `data prepare` dataset folder: DIR (its validation "
                        "split, held out) or DIR:SPLIT")
    add_flags(p, ReportOptions)
    p.add_argument("--out", required=True, help="output directory")
    _force_arg(p)


def extend_args(p: argparse.ArgumentParser) -> None:
    from langgraft.model.options import ExtendOptions

    p.add_argument("--model", required=True, help="HF causal LM: local directory or hub id (safetensors only)")
    p.add_argument("--tokenizer", required=True, help="`langgraft tokenizer extend` output directory")
    add_flags(p, ExtendOptions)
    p.add_argument("--out", required=True, help="output HF model directory")
    _force_arg(p)


def _print_and_exit(text: Callable[[argparse.Namespace], str]) -> type[argparse.Action]:
    """A flag that prints `text(arguments parsed so far)` and exits during parsing, like --help (so required flags
    are not needed)."""

    class PrintAndExit(argparse.Action):
        def __init__(self, option_strings, dest, **kwargs):
            super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

        def __call__(self, parser, namespace, values, option_string=None):
            print(text(namespace))
            parser.exit()

    return PrintAndExit


def _train_config_text(args: argparse.Namespace) -> str:
    """The key table; after --stage (and --config, overrides) also the peak memory that config would need."""
    from langgraft.config import describe
    from langgraft.train.config import TrainConfig

    text = ("langgraft train config: YAML keys (--config FILE) or KEY=VALUE overrides; see docs/TRAINING.md for "
            "the HF Trainer / LLaMA-Factory names\n" + config_table(describe(TrainConfig)))
    if getattr(args, "stage", None):
        from langgraft.config import load_config
        from langgraft.train.stages import memory_estimate

        cfg = load_config(TrainConfig, getattr(args, "config", None), list(getattr(args, "overrides", None) or []))
        text += f"\n\n--stage {args.stage}: {memory_estimate(args.stage, cfg)}"
    return text


def config_table(rows: list[tuple]) -> str:
    """KEY TYPE DEFAULT MEANING, one line per key, defaults written as YAML would read them."""
    import json

    cells = [(key, tp, json.dumps(default, ensure_ascii=False), meaning) for key, tp, default, meaning in rows]
    # a long default (lora.targets) overflows its own line instead of widening every line
    widths = [min(24, max(len(c[i]) for c in cells + [("KEY", "TYPE", "DEFAULT", "")])) for i in range(3)]
    lines = [("KEY", "TYPE", "DEFAULT", "MEANING")] + cells
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3] for c in lines)


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show-config", action=_print_and_exit(_train_config_text),
                   help="print every config key with its type, default and meaning, then exit; after --stage "
                        "(--config, KEY=VALUE) also the run's estimated peak memory")
    p.add_argument("--stage", required=True, choices=TRAIN_STAGES,
                   help="which stage to train")
    p.add_argument("--config", default=None, help="YAML config (see recipes/train/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. optim.lr=1e-4")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, adapter/)")
    p.add_argument("--force", action="store_true",
                   help="discard the langgraft run already in --out (finished or not) and train from scratch")


def export_args(p: argparse.ArgumentParser) -> None:
    from langgraft.export.run import ExportOptions

    p.add_argument("--run", required=True, help="a finished `langgraft train` run directory")
    add_flags(p, ExportOptions)
    p.add_argument("--out", required=True, help="output: model/ (merged HF checkpoint) and adapter/ (PEFT)")
    _force_arg(p)


def _task_listing(_args: argparse.Namespace) -> str:
    from langgraft.eval.tasks import task_listing

    return task_listing()


def eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-tasks", action=_print_and_exit(_task_listing),
                   help="list the shipped tasks (name, language, kind, suites, data) and where their YAMLs are")
    p.add_argument("--model", nargs="+", default=[], metavar="NAME=PATH",
                   help="models to evaluate: HF model dirs, exports, PEFT adapters, training runs or their "
                        "checkpoints (RUN/checkpoints/step-N)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="LIST",
                   help="task names, suites (fa_core, en_core, all) or task .yaml files; commas allowed")
    p.add_argument("--compare", nargs="+", default=None, metavar="DIR", help="merge earlier eval outputs instead")
    p.add_argument("--out", default=None, help="output directory (results.json, report.md, samples/, charts/)")
    p.add_argument("--export-lm-eval", default=None, metavar="DIR",
                   help="instead of evaluating: write --tasks as lm-evaluation-harness tasks into DIR "
                        "(lm_eval --include_path DIR --tasks langgraft)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $LANGGRAFT_DATA or ../shared/data)")
    p.add_argument("--contamination", nargs="+", default=[], metavar="DATASET",
                   help="training data (data prepare dir, .jsonl or .txt) to check eval examples against")
    add_flags(p, EvalOptions)
    _force_arg(p)


def data_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="data recipe YAML (e.g. recipes/data/persian.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. workers=4 root=/data")
    p.add_argument("--strict", action="store_true", help="the first broken JSON line is an error, not a counted drop")
    _force_arg(p)
    p.add_argument("--out", required=True, help="output directory")


def run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", metavar="RECIPE.yaml", help="pipeline recipe (see recipes/persian-llama2.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted recipe overrides right after RECIPE.yaml, e.g. out=runs/x eval.limit=50")
    from langgraft.pipeline.table import STAGES

    p.add_argument("--from", dest="start", default=None, metavar="STAGE",
                   help=f"first stage to run (earlier ones must be finished): {', '.join(STAGES)}")
    p.add_argument("--to", dest="stop", default=None, metavar="STAGE", help="last stage to run")
    p.add_argument("--smoke", action="store_true",
                   help="a short run of the whole recipe into OUT-smoke: each training stage 2 steps on at most 200 "
                        "texts, evaluation on 4 examples per task (data and tokenizer stages as configured)")


def demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")


def _model_args(p: argparse.ArgumentParser) -> None:
    from langgraft.model.generation import Sampling

    p.add_argument("--model", required=True,
                   help="HF model dir (e.g. an `export` model/), hub id, or a PEFT adapter dir (e.g. a run's adapter/)")
    add_flags(p, Sampling)


def chat_args(p: argparse.ArgumentParser) -> None:
    from langgraft.generate.chat import ChatOptions

    _model_args(p)
    p.add_argument("--prompt", default=None, help="answer this one prompt and exit (default: read lines from stdin)")
    add_flags(p, ChatOptions, skip=("sampling",))


def generate_args(p: argparse.ArgumentParser) -> None:
    from langgraft.generate.batch import GenerateOptions

    _model_args(p)
    p.add_argument("--input", required=True, metavar="FILE.jsonl", help="one JSON object per line")
    p.add_argument("--out", required=True, metavar="FILE.jsonl",
                   help="one output line per input line, in order; a rerun resumes after the last complete line")
    add_flags(p, GenerateOptions)


def import_gguf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf", metavar="FILE", help="a local .gguf model file (needs the gguf package: .[real])")
    p.add_argument("--out", required=True, help="new HF model folder (must not exist)")
    from langgraft.ggufio.read import ImportOptions

    add_flags(p, ImportOptions)


# ---------------------------------------------------------------- the table
