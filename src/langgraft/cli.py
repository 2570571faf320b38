"""Command line: a literal table from verb to (arguments, function); the arguments are built in `cli_args`.

Each verb's function imports its implementation lazily, so `langgraft --help` does not pay for torch. Input
problems surface as `UserError` and are printed as one line (`langgraft: error: ...`) with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from langgraft import cli_args
from langgraft.errors import UserError


def _done(out, result) -> bool:
    """True when the verb built `out` anew; an up-to-date output (result.skipped) is said so, in one line."""
    if result.skipped:
        print(f"{out}: up to date, skipped (same config and inputs; --force reruns it)")
    return not result.skipped


# ---------------------------------------------------------------- tokenizer train
def _tokenizer_train(args: argparse.Namespace) -> int:
    from langgraft.options import from_args
    from langgraft.tokenizer.train import TokenizerTrainOptions, train_tokenizer

    opts = from_args(TokenizerTrainOptions, args)
    result = train_tokenizer(args.input, lang=args.lang, out=args.out, opts=opts, force=args.force)
    if _done(args.out, result):
        print(f"wrote {result.path / 'sp.model'} ({result['vocab_size']} pieces)")
    return 0


# ---------------------------------------------------------------- tokenizer extend
def _tokenizer_extend(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.extend import extend_tokenizer

    report = extend_tokenizer(args.base, args.add, lang=args.lang, out=args.out, force=args.force)
    if _done(args.out, report):
        print(f"wrote {args.out}: {report['base_vocab_size']} → {report['vocab_size']} "
              f"(+{report['added']} new tokens, {report['new_merges']} merges)")
    return 0


# ---------------------------------------------------------------- tokenizer report
def _tokenizer_report(args: argparse.Namespace) -> int:
    from langgraft.options import from_args
    from langgraft.textfiles import parse_pairs
    from langgraft.tokenizer.report import ReportOptions, tokenizer_report

    result = tokenizer_report(parse_pairs(args.tokenizer, "--tokenizer"), parse_pairs(args.text, "--text"),
                              out=args.out, opts=from_args(ReportOptions, args), force=args.force)
    if _done(args.out, result):
        print(f"wrote {args.out}/report.md, report.json, fertility.png")
    return 0


# ---------------------------------------------------------------- extend / train / export
def _extend(args: argparse.Namespace) -> int:
    from langgraft.model.extend import extend_model
    from langgraft.model.options import ExtendOptions
    from langgraft.options import from_args

    r = extend_model(args.model, args.tokenizer, out=args.out, opts=from_args(ExtendOptions, args), force=args.force)
    if _done(args.out, r):
        print(f"wrote {args.out}: {r['old_rows']} → {r['padded_vocab_size']} rows (+{r['new_tokens']} new tokens, "
              f"{r['padding_rows']} padding, init {r['init']})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from langgraft.train.stages import train_from_file

    summary = train_from_file(args.stage, args.config, args.overrides, out=args.out, resume=args.resume,
                              force=args.force)
    if _done(args.out, summary) and os.environ.get("RANK", "0") == "0":  # under a launcher: one line, not one per rank
        print(f"wrote {args.out}: {summary['steps']} steps, {summary['tokens']} tokens, "
              f"final loss {summary['final_loss']:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from langgraft.export.run import ExportOptions, export_run
    from langgraft.options import from_args

    opts = from_args(ExportOptions, args)
    r = export_run(args.run, out=args.out, opts=opts, force=args.force)
    if _done(args.out, r):
        print(f"wrote {args.out}/model ({r['model_mb']:.1f} MB, model card README.md) and {args.out}/adapter "
              f"({r['adapter_mb']:.2f} MB of weights)")
        if "gguf" in r:
            print(f"wrote {args.out}/{r['gguf']['file']} ({r['gguf']['mb']:.1f} MB, {r['gguf']['type']})")
    if opts.push_to_hub:
        from langgraft.export.run import push_export

        pushed = push_export(args.out, opts.push_to_hub, private=opts.private)
        print(f"pushed {len(pushed['files'])} files to {pushed['repo']} (commit {pushed['commit'][:12]})")
    return 0


# ---------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> int:
    from langgraft.eval.merge import compare
    from langgraft.eval.options import EvalOptions
    from langgraft.eval.run import parse_models, run_eval
    from langgraft.options import from_args

    opts = from_args(EvalOptions, args)
    if args.export_lm_eval:
        from langgraft.eval.lm_eval_export import export_lm_eval

        if not args.tasks:
            raise UserError("--export-lm-eval: --tasks is required (the tasks to write)")
        done = export_lm_eval(args.tasks, args.export_lm_eval, opts, data_root=args.data_root)
        print(f"wrote {len(done['tasks'])} lm-eval tasks to {args.export_lm_eval} (lm_eval --include_path "
              f"{args.export_lm_eval} --tasks langgraft ...)")
        return 0
    if not args.out:
        raise UserError("--out is required (the output folder)")
    if args.compare:
        result = compare(args.compare, args.out, force=args.force)
    else:
        if not args.model or not args.tasks:
            raise UserError("--model and --tasks are required (or use --compare DIR...)")
        if args.sample_seed is not None and not args.limit:
            raise UserError("--sample-seed: needs --limit N (how many examples to draw)")
        result = run_eval(parse_models(args.model), args.tasks, args.out, opts, data_root=args.data_root,
                          contamination=args.contamination, force=args.force)
    doc = result.data
    if _done(args.out, result) and _main_rank():
        print(f"wrote {args.out}/report.md ({len(doc['models'])} models, {len(doc['tasks'])} tasks, "
              f"{len(doc['errors'])} errors)")
    return 1 if doc["errors"] else 0


# ---------------------------------------------------------------- data prepare
def _data_prepare(args: argparse.Namespace) -> int:
    from langgraft.config import load_config
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    overrides = list(args.overrides) + (["strict=true"] if args.strict else [])
    cfg = load_config(PrepareConfig, args.config, overrides)
    if cfg.executor == "slurm":
        from langgraft.data.executors import submit_slurm

        submitted = submit_slurm(cfg, args.out)
        if submitted:
            print(f"submitted the Slurm job chain of {args.out} (job ids {', '.join(map(str, submitted['jobs']))}); "
                  "run this command again when the jobs have finished, to publish it")
            return 0
    result = prepare(cfg, args.out, force=args.force)
    if not _done(args.out, result):
        return 0
    s = result.summary
    print(f"wrote {args.out}: {s['documents']} documents, {s['exact_duplicates']} exact + {s['near_duplicates']} "
          f"near duplicates removed, {s['leak_guard']['removed']} eval leaks removed "
          f"({s['input_bytes'] / 1e6:.1f} MB in {s['wall_time_s']:.0f} s)")
    return 0


# ---------------------------------------------------------------- run / demo
def _print_summary(result: dict) -> None:
    if result["summary"]:
        print(f"report: {result['out']}/report/summary.md (tables: {result['out']}/report/eval/report.md)")
        for line in result["summary"]["lines"]:
            print(f"  {line}")


def _run(args: argparse.Namespace) -> int:
    from langgraft.pipeline.run import run_recipe

    _print_summary(run_recipe(args.recipe, args.overrides, start=args.start, stop=args.stop, smoke=args.smoke))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from langgraft.demo import run_demo

    result = run_demo(args.out)
    _print_summary(result)
    print(f"demo finished in {result['wall_s']:.0f} s ({result['cpu_s']:.0f} s CPU) after loading the libraries. The "
          "model has 125k parameters and trained for seconds: the numbers show the plumbing, not results.")
    return 0


# ---------------------------------------------------------------- chat
def _chat(args: argparse.Namespace) -> int:
    from langgraft.generate.chat import ChatOptions, run_chat
    from langgraft.options import from_args

    run_chat(args.model, from_args(ChatOptions, args), prompt=args.prompt)
    return 0


# ---------------------------------------------------------------- generate
def _generate(args: argparse.Namespace) -> int:
    from langgraft.generate.batch import GenerateOptions, run_generate, summary_line
    from langgraft.model.generation import Sampling
    from langgraft.options import from_args

    sampling, opts = from_args(Sampling, args), from_args(GenerateOptions, args)
    counts = run_generate(args.model, args.input, args.out, sampling, opts)
    if _main_rank():
        print(summary_line(args.out, counts))
    return 0


def _main_rank() -> bool:
    """Not a rank > 0 of a launch: the one process that reports what the ranks wrote together."""
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------- import-gguf
def _import_gguf(args: argparse.Namespace) -> int:
    from langgraft.ggufio.read import import_gguf

    s = import_gguf(args.gguf, args.out, dtype=args.dtype).summary
    print(f"wrote {args.out}: {s['architecture']} {s['parameters'] / 1e6:.1f}M parameters ({s['dtype']}), "
          f"vocabulary {s['vocab_size']:,}, tied embeddings: {'yes' if s['tied_embeddings'] else 'no'}, "
          f"chat template: {'yes' if s['chat_template'] else 'none'}")
    return 0


# ---------------------------------------------------------------- the table
VERBS: dict[tuple[str, ...], tuple[str, Callable, Callable]] = {
    ("data", "prepare"): ("clean, deduplicate and split monolingual, bilingual and instruction data",
                          cli_args.data_prepare_args, _data_prepare),
    ("tokenizer", "train"): ("train a SentencePiece model on target-language text",
                             cli_args.tokenizer_train_args, _tokenizer_train),
    ("tokenizer", "extend"): ("merge new pieces into a base tokenizer, text in other scripts untouched",
                              cli_args.tokenizer_extend_args, _tokenizer_extend),
    ("tokenizer", "report"): ("fertility, chars/bytes per token, byte-fallback and unknown rates per text",
                              cli_args.tokenizer_report_args, _tokenizer_report),
    ("import-gguf",): ("turn a local GGUF model file into an HF model folder every verb takes as --model",
                       cli_args.import_gguf_args, _import_gguf),
    ("extend",): ("resize a model to an extended tokenizer and initialise the new rows",
                  cli_args.extend_args, _extend),
    ("train",): ("train a stage (align: embeddings+head; pretrain, instruct: LoRA+embeddings+head)",
                 cli_args.train_args, _train),
    ("export",): ("merge a training run into a full HF checkpoint plus a compact PEFT adapter",
                  cli_args.export_args, _export),
    ("eval",): ("evaluate models on tasks in each language with CIs, paired comparisons and a report",
                cli_args.eval_args, _eval),
    ("chat",): ("talk to a model through its chat template (or answer one --prompt)", cli_args.chat_args, _chat),
    ("generate",): ("generate for every prompt of a JSONL file (batched, resumable)",
                    cli_args.generate_args, _generate),
    ("run",): ("run a recipe stage by stage (data → tokenizer → model_extend → align → pretrain → instruct → "
               "report), resumable", cli_args.run_args, _run),
    ("demo",): ("the whole pipeline on CPU in a few minutes on a bundled corpus, offline",
                cli_args.demo_args, _demo),
}


class _UsageError(Exception):
    """A command line argparse refused; already printed as one line, so `main` only returns 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors (a bad flag value, a missing flag) as one line, like every other input error;
    the verbs' parsers are made by the same class."""

    def error(self, message: str):
        where = self.prog.removeprefix("langgraft").strip()
        print(f"langgraft: error: {where + ': ' if where else ''}{' '.join(message.split())} (see {self.prog} "
              "--help)", file=sys.stderr)
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="langgraft", description="Graft a new language onto a pretrained LLM.")
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
        # arguments that cannot name a file (choices, numbers, switches): `--stage align --out align` is no clash
        not_paths = frozenset(a.dest for a in sub._actions if a.choices is not None or a.nargs == 0
                              or a.type not in (None, str))
        sub.set_defaults(func=func, not_paths=not_paths)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except _UsageError:
        return 2
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
    finally:  # the console text goes into the output folder's langgraft.log, whatever the outcome
        append_log(_log_folder(args), sys.argv[1:] if argv is None else argv, status, captured, started)
    return status


def _log_folder(args: argparse.Namespace) -> str | None:
    """Where the command's langgraft.log goes: its --out, a recipe's `out`; None: nowhere (no output folder, or a
    recipe that does not load, whose error line is all there is to say)."""
    if args.verb != "run":
        return getattr(args, "out", None)
    from langgraft.pipeline.recipe import load_recipe

    try:
        return str(load_recipe(args.recipe, args.overrides, smoke=args.smoke).out)
    except UserError:
        return None


def named_paths(args: argparse.Namespace) -> tuple[str, ...]:
    """Every existing file or folder the command line names (`--config F`, `NAME=PATH`, `key=PATH`), but `--out`:
    the inputs no output may hold."""
    found = []
    skip = {"out", "verb", "action", "not_paths", *getattr(args, "not_paths", ())}
    for key, value in vars(args).items():
        if key in skip or callable(value):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, str) or not item:
                continue
            for text in (item, item.partition("=")[2]):
                if text and os.path.lexists(os.path.expanduser(text)):
                    found.append(text)
    return tuple(found)


def _dispatch(args: argparse.Namespace) -> int:
    from langgraft.rundir import INPUTS

    token = INPUTS.set(named_paths(args))
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"langgraft: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None or exc.errno is None:  # not about a file the user named or gave us
            raise
        # a file that cannot be read or written (read-only, no permission, a folder, a full disk): the
        # environment's answer, not a bug in langgraft
        where = f"{exc.filename} → {exc.filename2}" if exc.filename2 else str(exc.filename)
        print(f"langgraft: error: {where}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = RESUMES.get(args.verb if args.verb != "data" else f"data {args.action}")
        print("langgraft: interrupted" + (f"; {again}" if again else ""), file=sys.stderr)
        return 130
    finally:
        INPUTS.reset(token)


# what running the same command again does after Ctrl-C, for the verbs that pick up where they stopped
RESUMES = {
    "run": "rerun the same command to resume: finished stages are skipped, training continues from its last "
           "checkpoint",
    "demo": "rerun the same command to resume: finished stages are skipped",
    "train": "rerun it with --resume to continue from the last checkpoint in --out",
    "generate": "rerun the same command to resume after the last complete output line",
    "data prepare": "rerun the same command to resume: finished tasks are skipped",
}


if __name__ == "__main__":
    raise SystemExit(main())
