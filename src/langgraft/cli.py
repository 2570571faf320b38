"""Command line: a literal table from verb to (arguments, function).

Each verb's function imports its implementation lazily, so `langgraft --help` does not pay for torch. Input
problems surface as `UserError` and are printed as one line (`langgraft: error: ...`) with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from langgraft.errors import UserError


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="rebuild even if --out is up to date, or replace another verb's output there")


def _produce(args: argparse.Namespace, make: Callable):
    """(make(), skipped): run the verb with its --force, and say so when --out was already up to date."""
    from langgraft.rundir import FORCE, output_stamp

    before = output_stamp(args.out)
    token = FORCE.set(bool(getattr(args, "force", False)))
    try:
        result = make()
    finally:
        FORCE.reset(token)
    skipped = before is not None and output_stamp(args.out) == before
    if skipped:
        print(f"{args.out}: up to date, skipped (same config and inputs; --force reruns it)")
    return result, skipped


# ---------------------------------------------------------------- tokenizer train
def _tokenizer_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help=".txt (a document per line), .jsonl, or a `data prepare` dataset folder: DIR (its train "
                        "split) or DIR:SPLIT")
    p.add_argument("--field", default="text", help="jsonl field holding the text (default: text)")
    p.add_argument("--lang", required=True, help="language code, e.g. fa")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    p.add_argument("--max-sentences", type=int, default=2_000_000, help="sample at most this many lines")
    p.add_argument("--threads", type=int, default=None, help="trainer threads (default: all cores)")
    p.add_argument("--normalizer", nargs="*", default=[], metavar="KEY=VALUE",
                   help="normaliser options, e.g. digits=latin newlines=space zwnj_repair=false")
    p.add_argument("--out", required=True, help="output directory")
    _force_arg(p)


def _tokenizer_train(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.train import parse_normalizer_options, train_tokenizer

    result, skipped = _produce(args, lambda: train_tokenizer(
        args.input, lang=args.lang, vocab_size=args.vocab_size, model_type=args.model_type, out=args.out,
        field=args.field, max_sentences=args.max_sentences, threads=args.threads,
        normalizer=parse_normalizer_options(args.normalizer),
    ))
    if not skipped:
        print(f"wrote {result['model']} ({result['vocab_size']} pieces)")
    return 0


# ---------------------------------------------------------------- tokenizer extend
def _tokenizer_extend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="HF tokenizer dir, tokenizer.model (SentencePiece or tiktoken), "
                                                  "or vocab.json+merges.txt dir")
    p.add_argument("--add", required=True, help="SentencePiece model (or `tokenizer train` output dir)")
    p.add_argument("--lang", required=True, help="language code, e.g. fa")
    p.add_argument("--out", required=True, help="output HF tokenizer directory")
    _force_arg(p)


def _tokenizer_extend(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.extend import extend_tokenizer

    report, skipped = _produce(args, lambda: extend_tokenizer(args.base, args.add, lang=args.lang, out=args.out))
    if not skipped:
        print(f"wrote {args.out}: {report['base_vocab_size']} → {report['vocab_size']} "
              f"(+{report['added']} new tokens, {report['new_merges']} merges)")
    return 0


# ---------------------------------------------------------------- tokenizer report
def _sizes(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _tokenizer_report_args(p: argparse.ArgumentParser) -> None:
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


def _tokenizer_report(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.report import parse_pairs, tokenizer_report

    _, skipped = _produce(args, lambda: tokenizer_report(
        parse_pairs(args.tokenizer, "--tokenizer"), parse_pairs(args.text, "--text"), out=args.out,
        normalize=args.normalize, sweep=args.sweep, sweep_base=args.sweep_base, sweep_train=args.sweep_train,
        lang=args.lang,
    ))
    if not skipped:
        print(f"wrote {args.out}/report.md, report.json, fertility.png")
    return 0


# ---------------------------------------------------------------- extend / train / export
def _extend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF causal LM: local directory or hub id (safetensors only)")
    p.add_argument("--tokenizer", required=True, help="`langgraft tokenizer extend` output directory")
    # the names of langgraft.model.init.METHODS, written out so `--help` does not import torch
    p.add_argument("--init", choices=["shrunk-subtokens", "mean-subtokens", "mean", "random"],
                   default="mean-subtokens",
                   help="how new rows start (default: the mean of each new token's base pieces; "
                        "shrunk-subtokens: that mean pulled 1/4 toward the mean of all rows; docs/TRAINING.md)")
    p.add_argument("--seed", type=int, default=0, help="seed for --init random")
    p.add_argument("--trust-tokenizer", action="store_true",
                   help="proceed when the model folder has no tokenizer to check --tokenizer against (sizes only)")
    p.add_argument("--out", required=True, help="output HF model directory")
    _force_arg(p)


def _extend(args: argparse.Namespace) -> int:
    from langgraft.model.extend import extend_model

    r, skipped = _produce(args, lambda: extend_model(args.model, args.tokenizer, out=args.out, init=args.init,
                                                     seed=args.seed, trust_tokenizer=args.trust_tokenizer))
    if not skipped:
        print(f"wrote {args.out}: {r['old_rows']} → {r['padded_vocab_size']} rows (+{r['new_tokens']} new tokens, "
              f"{r['padding_rows']} padding, init {r['init']})")
    return 0


def _print_and_exit(text: Callable[[], str]) -> type[argparse.Action]:
    """A flag that prints `text()` and exits during parsing, like --help (so required flags are not needed)."""

    class PrintAndExit(argparse.Action):
        def __init__(self, option_strings, dest, **kwargs):
            super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

        def __call__(self, parser, namespace, values, option_string=None):
            print(text())
            parser.exit()

    return PrintAndExit


def _train_config_text() -> str:
    from langgraft.config import describe
    from langgraft.train.config import TrainConfig

    return ("langgraft train config: YAML keys (--config FILE) or KEY=VALUE overrides; see docs/TRAINING.md for "
            "the HF Trainer / LLaMA-Factory names\n" + config_table(describe(TrainConfig)))


def config_table(rows: list[tuple]) -> str:
    """KEY TYPE DEFAULT MEANING, one line per key, defaults written as YAML would read them."""
    import json

    cells = [(key, tp, json.dumps(default, ensure_ascii=False), meaning) for key, tp, default, meaning in rows]
    # a long default (lora.targets) overflows its own line instead of widening every line
    widths = [min(24, max(len(c[i]) for c in cells + [("KEY", "TYPE", "DEFAULT", "")])) for i in range(3)]
    lines = [("KEY", "TYPE", "DEFAULT", "MEANING")] + cells
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3] for c in lines)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show-config", action=_print_and_exit(_train_config_text),
                   help="print every config key with its type, default and meaning, then exit")
    p.add_argument("--stage", required=True, choices=["align", "pretrain", "instruct"],
                   help="which stage to train")
    p.add_argument("--config", default=None, help="YAML config (see recipes/train/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. optim.lr=1e-4")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, adapter/)")
    p.add_argument("--force", action="store_true",
                   help="discard the langgraft run already in --out (finished or not) and train from scratch")


def _train(args: argparse.Namespace) -> int:
    from langgraft.train.stages import train_stage

    summary, skipped = _produce(args, lambda: train_stage(args.stage, args.config, args.overrides, out=args.out,
                                                          resume=args.resume))
    if not skipped:
        print(f"wrote {args.out}: {summary['steps']} steps, {summary['tokens']} tokens, "
              f"final loss {summary['final_loss']:.4f}")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a finished `langgraft train` run directory")
    p.add_argument("--out", required=True, help="output: model/ (merged HF checkpoint) and adapter/ (PEFT)")
    p.add_argument("--gguf", action="store_true", help="also write model.gguf for llama.cpp / Ollama / LM Studio")
    p.add_argument("--gguf-type", choices=["f16", "bf16", "q8_0"], default=None,
                   help="GGML type of the GGUF's matrices (default f16; implies --gguf)")
    _force_arg(p)


def _export(args: argparse.Namespace) -> int:
    from langgraft.export import export_run

    gguf = args.gguf_type or ("f16" if args.gguf else None)
    r, skipped = _produce(args, lambda: export_run(args.run, out=args.out, gguf=gguf))
    if not skipped:
        print(f"wrote {args.out}/model ({r['model_mb']:.1f} MB, model card README.md) and {args.out}/adapter "
              f"({r['adapter_mb']:.2f} MB of weights)")
        if "gguf" in r:
            print(f"wrote {args.out}/{r['gguf']['file']} ({r['gguf']['mb']:.1f} MB, {r['gguf']['type']})")
    return 0


# ---------------------------------------------------------------- eval
def _task_listing() -> str:
    from langgraft.eval.tasks import task_listing

    return task_listing()


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-tasks", action=_print_and_exit(_task_listing),
                   help="list the shipped tasks (name, language, kind, suites, data) and where their YAMLs are")
    p.add_argument("--model", nargs="+", default=[], metavar="NAME=PATH", help="models (HF dirs) to evaluate")
    p.add_argument("--tasks", nargs="+", default=[], metavar="LIST",
                   help="task names, suites (fa_core, en_core, all) or task .yaml files; commas allowed")
    p.add_argument("--compare", nargs="+", default=None, metavar="DIR", help="merge earlier eval outputs instead")
    p.add_argument("--out", required=True, help="output directory (results.json, report.md, samples/, charts/)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples of each task")
    p.add_argument("--sample-seed", type=int, default=None, metavar="SEED",
                   help="with --limit: a random N examples drawn with this seed instead of the first N")
    p.add_argument("--shots", type=int, default=None, help="in-context examples (default: each task's own)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $LANGGRAFT_DATA or ../shared/data)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap every generation task's budget")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template (instruct models)")
    p.add_argument("--repetition-penalty", type=float, default=1.1,
                   help="generation tasks: greedy with this penalty (default 1.1; 1 = none)")
    p.add_argument("--contamination", nargs="+", default=[], metavar="DATASET",
                   help="training data (data prepare dir, .jsonl or .txt) to check eval examples against")
    p.add_argument("--contamination-threshold", type=float, default=0.2, metavar="SHARE",
                   help="flag an example when at least this share of its word 8-grams occurs in that training "
                        "data (default 0.2; 1 = only whole copies)")
    _force_arg(p)


def _eval(args: argparse.Namespace) -> int:
    from langgraft.eval.run import EvalOptions, compare, parse_models, run_eval

    if args.compare:
        doc, skipped = _produce(args, lambda: compare(args.compare, args.out))
    else:
        if not args.model or not args.tasks:
            raise UserError("--model and --tasks are required (or use --compare DIR...)")
        if args.sample_seed is not None and not args.limit:
            raise UserError("--sample-seed: needs --limit N (how many examples to draw)")
        if not 0 < args.contamination_threshold <= 1:
            raise UserError(f"--contamination-threshold: must be in (0, 1], got {args.contamination_threshold}")
        opts = EvalOptions(limit=args.limit, sample_seed=args.sample_seed, shots=args.shots,
                           contamination_threshold=args.contamination_threshold,
                           batch_size=args.batch_size, device=args.device,
                           max_new_tokens=args.max_new_tokens, chat=args.chat,
                           repetition_penalty=args.repetition_penalty)
        doc, skipped = _produce(args, lambda: run_eval(parse_models(args.model), args.tasks, args.out, opts,
                                                       data_root=args.data_root, contamination=args.contamination))
    if not skipped:
        print(f"wrote {args.out}/report.md ({len(doc['models'])} models, {len(doc['tasks'])} tasks, "
              f"{len(doc['errors'])} errors)")
    return 1 if doc["errors"] else 0


# ---------------------------------------------------------------- data prepare
def _data_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="data recipe YAML (e.g. recipes/data/persian.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. workers=4 root=/data")
    p.add_argument("--strict", action="store_true", help="the first broken JSON line is an error, not a counted drop")
    _force_arg(p)
    p.add_argument("--out", required=True, help="output directory")


def _data_prepare(args: argparse.Namespace) -> int:
    from langgraft.config import load_config
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    overrides = list(args.overrides) + (["strict=true"] if args.strict else [])
    manifest, skipped = _produce(args, lambda: prepare(load_config(PrepareConfig, args.config, overrides), args.out))
    if skipped:
        return 0
    s = manifest["summary"]
    print(f"wrote {args.out}: {s['documents']} documents, {s['exact_duplicates']} exact + {s['near_duplicates']} "
          f"near duplicates removed, {s['leak_guard']['removed']} eval leaks removed "
          f"({s['input_bytes'] / 1e6:.1f} MB in {s['wall_time_s']:.0f} s)")
    return 0


# ---------------------------------------------------------------- run / demo
def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", metavar="RECIPE.yaml", help="pipeline recipe (see recipes/persian-llama2.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted recipe overrides right after RECIPE.yaml, e.g. out=runs/x eval.limit=50")
    p.add_argument("--from", dest="start", default=None, metavar="STAGE",
                   help="first stage to run (earlier ones must be finished): data, tokenizer, tokenizer_extend, "
                        "model_extend, align, pretrain, instruct, report")
    p.add_argument("--to", dest="stop", default=None, metavar="STAGE", help="last stage to run")


def _print_summary(result: dict) -> None:
    if result["summary"]:
        print(f"report: {result['out']}/report/summary.md (tables: {result['out']}/report/eval/report.md)")
        for line in result["summary"]["lines"]:
            print(f"  {line}")


def _run(args: argparse.Namespace) -> int:
    from langgraft.pipeline import run_recipe
    from langgraft.recipe import load_recipe

    args.out = str(load_recipe(args.recipe, args.overrides).out)  # where langgraft.log goes

    _print_summary(run_recipe(args.recipe, args.overrides, start=args.start, stop=args.stop))
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")


def _demo(args: argparse.Namespace) -> int:
    from langgraft.demo import run_demo

    result = run_demo(args.out)
    _print_summary(result)
    print(f"demo finished in {result['wall_s']:.0f} s ({result['cpu_s']:.0f} s CPU) after loading the libraries. The "
          "model has 125k parameters and trained for seconds: the numbers show the plumbing, not results.")
    return 0


# ---------------------------------------------------------------- chat
def _model_args(p: argparse.ArgumentParser) -> None:
    from langgraft.generation import add_sampling_args

    p.add_argument("--model", required=True,
                   help="HF model dir (e.g. an `export` model/), hub id, or a PEFT adapter dir (e.g. a run's adapter/)")
    p.add_argument("--base", default=None, help="base model under an adapter dir (default: the one it names)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_sampling_args(p)


def _chat_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--prompt", default=None, help="answer this one prompt and exit (default: read lines from stdin)")
    p.add_argument("--system", default="", help="system message (also /system TEXT in the conversation)")
    p.add_argument("--json", action="store_true", help="one JSON object per turn instead of the streamed reply")


def _chat(args: argparse.Namespace) -> int:
    from langgraft.chat import ChatOptions, run_chat
    from langgraft.generation import sampling_from_args

    opts = ChatOptions(sampling_from_args(args), args.device, args.json, args.base, args.system)
    run_chat(args.model, opts, prompt=args.prompt)
    return 0


# ---------------------------------------------------------------- generate
def _generate_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--input", required=True, metavar="FILE.jsonl", help="one JSON object per line")
    p.add_argument("--out", required=True, metavar="FILE.jsonl",
                   help="one output line per input line, in order; a rerun resumes after the last complete line")
    p.add_argument("--field", default="prompt", help="the input field with the prompt (default: prompt)")
    p.add_argument("--chat", action="store_true",
                   help="the field is a chat (list of {role, content}, or a string: one user turn), sent through "
                        "the model's chat template")
    p.add_argument("--batch-size", type=int, default=16, help="prompts generated together (KV cache, left padding)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable input line (default: skip it "
                                                         "and count it)")


def _generate(args: argparse.Namespace) -> int:
    from langgraft.batch_generate import GenerateOptions, run_generate, summary_line
    from langgraft.generation import sampling_from_args

    opts = GenerateOptions(args.field, args.chat, args.batch_size, args.strict, args.device, args.base)
    counts = run_generate(args.model, args.input, args.out, sampling_from_args(args), opts)
    print(summary_line(args.out, counts))
    return 0


# ---------------------------------------------------------------- import-gguf
def _import_gguf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf", metavar="FILE", help="a local .gguf model file (needs the gguf package: .[real])")
    p.add_argument("--out", required=True, help="new HF model folder (must not exist)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weight dtype of the saved model (default float32: the de-quantised values exactly)")


def _import_gguf(args: argparse.Namespace) -> int:
    from langgraft.ggufio import import_gguf

    s = import_gguf(args.gguf, args.out, dtype=args.dtype)["summary"]
    print(f"wrote {args.out}: {s['architecture']} {s['parameters'] / 1e6:.1f}M parameters ({s['dtype']}), "
          f"vocabulary {s['vocab_size']:,}, tied embeddings: {'yes' if s['tied_embeddings'] else 'no'}, "
          f"chat template: {'yes' if s['chat_template'] else 'none'}")
    return 0


# ---------------------------------------------------------------- the table
VERBS: dict[tuple[str, ...], tuple[str, Callable, Callable]] = {
    ("data", "prepare"): ("clean, deduplicate and split monolingual, bilingual and instruction data",
                          _data_prepare_args, _data_prepare),
    ("tokenizer", "train"): ("train a SentencePiece model on target-language text",
                             _tokenizer_train_args, _tokenizer_train),
    ("tokenizer", "extend"): ("merge new pieces into a base tokenizer, English untouched",
                              _tokenizer_extend_args, _tokenizer_extend),
    ("tokenizer", "report"): ("fertility, chars/bytes per token, byte-fallback and unknown rates per text",
                              _tokenizer_report_args, _tokenizer_report),
    ("import-gguf",): ("turn a local GGUF model file into an HF model folder every verb takes as --model",
                       _import_gguf_args, _import_gguf),
    ("extend",): ("resize a model to an extended tokenizer and initialise the new rows", _extend_args, _extend),
    ("train",): ("train a stage (align: embeddings+head; pretrain, instruct: LoRA+embeddings+head)", _train_args, _train),
    ("export",): ("merge a training run into a full HF checkpoint plus a compact PEFT adapter",
                  _export_args, _export),
    ("eval",): ("evaluate models on Persian/English tasks with CIs, paired comparisons and a report",
                _eval_args, _eval),
    ("chat",): ("talk to a model through its chat template (or answer one --prompt)", _chat_args, _chat),
    ("generate",): ("generate for every prompt of a JSONL file (batched, resumable)", _generate_args, _generate),
    ("run",): ("run a recipe stage by stage (data → tokenizer → model_extend → align → pretrain → instruct → report), "
               "resumable", _run_args, _run),
    ("demo",): ("the whole pipeline on CPU in a few minutes on a bundled corpus, offline", _demo_args, _demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langgraft", description="Graft a new language onto a pretrained LLM.")
    top = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, (help_text, add_args, func) in VERBS.items():
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                group = top.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group.add_subparsers(dest="action", metavar="ACTION", required=True)
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        add_args(sub)
        sub.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # one line naming the option, not argparse's usage block
        verb = " ".join(x for x in (args.verb, getattr(args, "action", None)) if x)
        print(f"langgraft: error: {verb}: unknown option {unknown[0]} (see langgraft {verb} --help)", file=sys.stderr)
        return 2
    import time
    import traceback

    from langgraft.consolelog import append_log, capture

    started, status, captured = time.time(), 1, []
    try:
        with capture() as captured:
            try:
                status = _dispatch(args)
            except Exception:
                captured.append(traceback.format_exc())
                raise
    finally:  # the console text goes into --out's langgraft.log, whatever the outcome
        append_log(getattr(args, "out", None), sys.argv[1:] if argv is None else argv, status, captured, started)
    return status


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"langgraft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langgraft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
