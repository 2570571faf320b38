"""The arguments of each CLI verb: one `*_args(parser)` builder per verb, as `cli.VERBS` lists them.

Only argparse and torch-free modules are imported here: every `langgraft` call (`--help` included) builds every
verb's parser. Flag defaults are read from the options they fill (the function's or dataclass's own default).
"""

from __future__ import annotations

import argparse
from typing import Callable

from langgraft.batch_generate import GenerateOptions
from langgraft.config import Range, ranged
from langgraft.eval.options import EvalOptions
from langgraft.tokenizer.train import FIELD, MAX_SENTENCES, MODEL_TYPE, MODEL_TYPES
from langgraft.train.config import STAGES as TRAIN_STAGES


_pos_int, _non_neg_int = ranged(int, Range(1)), ranged(int, Range(0))


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="rebuild even if --out is up to date, or replace another verb's output there")


def tokenizer_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help=".txt (a document per line), .jsonl, or a `data prepare` dataset folder: DIR (its train "
                        "split) or DIR:SPLIT")
    p.add_argument("--field", default=FIELD, help=f"jsonl field holding the text (default: {FIELD})")
    p.add_argument("--lang", required=True, help="language code, e.g. fa")
    p.add_argument("--vocab-size", type=_pos_int, required=True)
    p.add_argument("--model-type", choices=MODEL_TYPES, default=MODEL_TYPE)
    p.add_argument("--max-sentences", type=_pos_int, default=MAX_SENTENCES, help="sample at most this many lines")
    p.add_argument("--threads", type=_pos_int, default=None, help="trainer threads (default: all cores)")
    p.add_argument("--normalizer", nargs="*", default=[], metavar="KEY=VALUE",
                   help="normaliser options, e.g. digits=latin newlines=space zwnj_repair=false")
    p.add_argument("--out", required=True, help="output directory")
    _force_arg(p)


def tokenizer_extend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="HF tokenizer dir, tokenizer.model (SentencePiece or tiktoken), "
                                                  "or vocab.json+merges.txt dir")
    p.add_argument("--add", required=True, help="SentencePiece model (or `tokenizer train` output dir)")
    p.add_argument("--lang", required=True, help="language code, e.g. fa")
    p.add_argument("--out", required=True, help="output HF tokenizer directory")
    _force_arg(p)


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"every size must be ≥ 1, got {value!r}")
    return sizes


def tokenizer_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", nargs="+", required=True, metavar="NAME=PATH",
                   help="tokenizers to compare (HF dir, tokenizer.model, vocab.json+merges.txt dir)")
    p.add_argument("--text", nargs="+", required=True, metavar="LANG=FILE",
                   help=".txt (a line each), .jsonl, or a `data prepare` dataset folder: DIR (its validation "
                        "split, held out) or DIR:SPLIT")
    p.add_argument("--normalize", action="store_true", help="apply each text's language normaliser first")
    p.add_argument("--sweep", type=_sizes, default=[], metavar="N,N,...",
                   help="also train + merge a vocabulary of each size and tabulate fertility")
    p.add_argument("--sweep-base", default=None, metavar="NAME", help="--tokenizer to extend (default: first)")
    p.add_argument("--sweep-train", nargs="+", default=[], metavar="FILE",
                   help="training text for --sweep (files or dataset DIR[:SPLIT], as tokenizer train --input)")
    p.add_argument("--lang", default=None, help="language of the new pieces for --sweep, e.g. fa")
    p.add_argument("--out", required=True, help="output directory")
    _force_arg(p)


def extend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF causal LM: local directory or hub id (safetensors only)")
    p.add_argument("--tokenizer", required=True, help="`langgraft tokenizer extend` output directory")
    # the names of langgraft.model.init.METHODS, written out so `--help` does not import torch
    p.add_argument("--init", choices=["shrunk-subtokens", "mean-subtokens", "mean", "random"],
                   default="mean-subtokens",
                   help="how new rows start (default: the mean of each new token's base pieces; "
                        "shrunk-subtokens: that mean pulled 1/4 toward the mean of all rows; docs/TRAINING.md)")
    p.add_argument("--seed", type=_non_neg_int, default=0, help="seed for --init random")
    p.add_argument("--trust-tokenizer", action="store_true",
                   help="proceed when the model folder has no tokenizer to check --tokenizer against (sizes only)")
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
    p.add_argument("--run", required=True, help="a finished `langgraft train` run directory")
    p.add_argument("--checkpoint", default=None, metavar="step-N",
                   help="export that checkpoint of --run (step-N or N; also while the run still trains)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="upload the export to this hub model repo (model/ at its root, adapter/ as a subfolder, "
                        "model.gguf); needs a token (`hf auth login` or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--base-id", default=None, metavar="HUB_ID",
                   help="the hub id the adapter's base (the extended model) is published under: recorded as the "
                        "adapter's base instead of the local path")
    p.add_argument("--out", required=True, help="output: model/ (merged HF checkpoint) and adapter/ (PEFT)")
    p.add_argument("--gguf", action="store_true", help="also write model.gguf for llama.cpp / Ollama / LM Studio")
    p.add_argument("--gguf-type", choices=["f16", "bf16", "q8_0", "q4_0", "f32"], default=None,
                   help="GGML type of the GGUF's matrices (default f16; implies --gguf)")
    _force_arg(p)


def _task_listing(_args: argparse.Namespace) -> str:
    from langgraft.eval.tasks import task_listing

    return task_listing()


def eval_args(p: argparse.ArgumentParser) -> None:
    d = EvalOptions()
    p.add_argument("--list-tasks", action=_print_and_exit(_task_listing),
                   help="list the shipped tasks (name, language, kind, suites, data) and where their YAMLs are")
    p.add_argument("--model", nargs="+", default=[], metavar="NAME=PATH", help="models to evaluate: HF model dirs, exports, PEFT adapters, training runs or their checkpoints (RUN/checkpoints/step-N)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="LIST",
                   help="task names, suites (fa_core, en_core, all) or task .yaml files; commas allowed")
    p.add_argument("--compare", nargs="+", default=None, metavar="DIR", help="merge earlier eval outputs instead")
    p.add_argument("--out", default=None, help="output directory (results.json, report.md, samples/, charts/)")
    p.add_argument("--export-lm-eval", default=None, metavar="DIR",
                   help="instead of evaluating: write --tasks as lm-evaluation-harness tasks into DIR "
                        "(lm_eval --include_path DIR --tasks langgraft)")
    p.add_argument("--limit", type=_pos_int, default=None, help="evaluate only the first N examples of each task")
    p.add_argument("--sample-seed", type=_non_neg_int, default=None, metavar="SEED",
                   help="with --limit: a random N examples drawn with this seed instead of the first N")
    p.add_argument("--shots", type=_non_neg_int, default=None, help="in-context examples (default: each task's own)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $LANGGRAFT_DATA or ../shared/data)")
    p.add_argument("--batch-size", type=_pos_int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--max-new-tokens", type=_pos_int, default=None, help="cap every generation task's budget")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu; under a "
                   "launcher each rank's own GPU); auto: one model spread over every GPU (device_map=\"auto\")")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template (instruct models)")
    p.add_argument("--repetition-penalty", type=ranged(float, Range(0, lo_open=True)),
                   default=d.repetition_penalty, help=f"generation tasks: greedy with this penalty (default {d.repetition_penalty}; 1 = none)")
    p.add_argument("--contamination", nargs="+", default=[], metavar="DATASET",
                   help="training data (data prepare dir, .jsonl or .txt) to check eval examples against")
    p.add_argument("--contamination-threshold", type=ranged(float, Range(0, 1, lo_open=True)), default=d.contamination_threshold, metavar="SHARE",
                   help="flag an example when at least this share of its word 8-grams occurs in that training "
                        f"data (default {d.contamination_threshold}; 1 = only whole copies)")
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
    p.add_argument("--from", dest="start", default=None, metavar="STAGE",
                   help="first stage to run (earlier ones must be finished): data, tokenizer, tokenizer_extend, "
                        "model_extend, align, pretrain, instruct, report")
    p.add_argument("--to", dest="stop", default=None, metavar="STAGE", help="last stage to run")
    p.add_argument("--smoke", action="store_true",
                   help="a short run of the whole recipe into OUT-smoke: each training stage 2 steps on at most 200 "
                        "texts, evaluation on 4 examples per task (data and tokenizer stages as configured)")


def demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")


def _model_args(p: argparse.ArgumentParser) -> None:
    from langgraft.model.generation import add_sampling_args

    p.add_argument("--model", required=True,
                   help="HF model dir (e.g. an `export` model/), hub id, or a PEFT adapter dir (e.g. a run's adapter/)")
    p.add_argument("--base", default=None, help="base model under an adapter dir (default: the one it names)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu; under a "
                   "launcher each rank's own GPU); auto: one model spread over every GPU (device_map=\"auto\")")
    add_sampling_args(p)


def chat_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--prompt", default=None, help="answer this one prompt and exit (default: read lines from stdin)")
    p.add_argument("--system", default="", help="system message (also /system TEXT in the conversation)")
    p.add_argument("--json", action="store_true", help="one JSON object per turn instead of the streamed reply")


def generate_args(p: argparse.ArgumentParser) -> None:
    d = GenerateOptions()
    _model_args(p)
    p.add_argument("--input", required=True, metavar="FILE.jsonl", help="one JSON object per line")
    p.add_argument("--out", required=True, metavar="FILE.jsonl",
                   help="one output line per input line, in order; a rerun resumes after the last complete line")
    p.add_argument("--field", default=d.field, help=f"the input field with the prompt (default: {d.field})")
    p.add_argument("--chat", action="store_true",
                   help="the field is a chat (list of {role, content}, or a string: one user turn), sent through "
                        "the model's chat template")
    p.add_argument("--batch-size", type=_pos_int, default=d.batch_size,
                   help=f"prompts generated together (KV cache, left padding; default {d.batch_size})")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable input line (default: skip it "
                                                         "and count it)")


def import_gguf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf", metavar="FILE", help="a local .gguf model file (needs the gguf package: .[real])")
    p.add_argument("--out", required=True, help="new HF model folder (must not exist)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weight dtype of the saved model (default float32: the de-quantised values exactly)")


# ---------------------------------------------------------------- the table
