"""Typed configuration of `langgraft data prepare` (YAML serialisation: recipes/data/*.yaml).

Paths in sources are globs relative to `root` (itself relative to the working directory), so a recipe can name
`persian_news/**/*.json` and a test can point `root=` at another data folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from langgraft.config import NonNegInt, PosFloat, PosInt, Range, Share
from langgraft.lang import ANCHOR, DEFAULT_TARGET

Kind = Literal["monolingual", "bilingual", "instructions"]
Reader = Literal["auto", "text", "blocks", "jsonl", "json", "csv", "tsv", "parquet", "hf"]


@dataclass
class SourceConfig:
    path: str = ""  # glob (relative to `root`), a local `datasets` folder, or a hub id for reader=hf
    path2: str = ""  # bilingual only: the target-side file, line-aligned with `path` (both plain text)
    reader: Reader = "auto"  # auto = from the extension (.txt text, .jsonl, .json, .csv, .tsv, .parquet; +.gz)
    lang: str = ""  # language of this source's text (instructions); default: the dataset's `lang`
    text: list[str] = field(default_factory=lambda: ["text"])  # monolingual: fields joined by newline (lists too)
    records: str = ""  # explode this list field: each element (merged over its parent) becomes a record
    src: str = "src"  # bilingual (one file): source-side field / column
    tgt: str = "tgt"  # bilingual (one file): target-side field / column
    instruction: str = "instruction"  # instructions: field names
    input: str = "input"  # instructions: optional field (missing means empty)
    output: str = "output"
    messages: str = ""  # instructions: a list field of chat turns (OpenAI `messages`, ShareGPT `conversations`);
    # when set it replaces instruction/input/output and multi-turn conversations are kept whole
    role: str = "role"  # a turn's role field (ShareGPT: from); human/gpt/model/bot read as user/assistant
    content: str = "content"  # a turn's text field (ShareGPT: value)
    line_prefix: str = ""  # text reader: keep only lines starting with this prefix (prefix removed)
    split: str = "train"  # hf reader: which split
    limit: NonNegInt = 0  # read at most this many records from each file of this source (0 = all)
    license: str = ""  # this source's licence (default: the `license` column of a MANIFEST.tsv above its files)


@dataclass
class FilterConfig:
    min_chars: NonNegInt = 20  # shorter documents (after normalisation and boilerplate removal) are dropped
    max_chars: PosInt = 1_000_000
    min_words: NonNegInt = 3
    min_script_ratio: Share = 0.6  # share of target-script characters among letters (lang.script_ratio)
    langid: bool = True  # py3langid (bundled model, offline) must agree with the expected language
    langid_min_prob: Share = 0.5  # dropped when another language wins or the expected one scores below this
    langid_chars: PosInt = 256  # classify only the first N characters (py3langid is linear in characters; 256
    # and 400 both drop 0 of 1,044 news articles and catch Arabic)
    langid_candidates: list[str] = field(default_factory=list)  # restrict py3langid to these codes ([] = all 97)
    langid_min_chars: NonNegInt = 50  # shorter texts are not language-checked (too few words for py3langid)
    max_dup_line_frac: Share = 0.3  # Gopher: documents whose duplicated lines exceed this share are dropped
    max_top_ngram_frac: Share = 0.2  # Gopher: the most frequent word 2-gram covers more than this share of chars
    boilerplate: list[str] = field(default_factory=list)  # regexes; matching lines are removed (and counted)
    max_length_ratio: Annotated[float, Range(1)] = 3.0  # bilingual: max chars(longer side) / chars(shorter side)


@dataclass
class DedupConfig:
    exact: bool = True  # drop repeats of the same normalised text across all sources of the dataset
    near: bool = True  # MinHash LSH near-duplicate removal (datatrove's four-stage MinHash)
    threshold: Annotated[float, Range(0, 1, lo_open=True)] = 0.8  # Jaccard threshold the LSH bands are tuned for (datasketch's optimiser)
    num_perm: PosInt = 112  # number of MinHash permutations (bands x rows)
    ngram: PosInt = 5  # word n-gram shingles


@dataclass
class DatasetConfig:
    name: str = ""
    kind: Kind = "monolingual"
    lang: str = DEFAULT_TARGET  # monolingual / instructions: the expected language
    src_lang: str = ANCHOR  # bilingual
    tgt_lang: str = DEFAULT_TARGET  # bilingual
    format: Literal["src_tgt", "both", "translate", "interleave"] = "both"  # bilingual → training text
    interleave_group: PosInt = 4  # format=interleave: consecutive pairs per record, alternating languages
    validation_fraction: Share = 0.01  # share of records (by content hash) in the validation split
    sources: list[SourceConfig] = field(default_factory=list)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class EvalSetConfig:
    name: str = ""
    source: SourceConfig = field(default_factory=SourceConfig)
    fields: list[str] = field(default_factory=lambda: ["text"])  # every string (or list of strings) is a text


@dataclass
class LeakGuardConfig:
    # evaluation tasks (names, suites, task .yaml files) whose data, read from the task files themselves, never
    # reaches a train split; `langgraft run` adds the tasks its recipe evaluates
    tasks: list[str] = field(default_factory=lambda: ["all"])
    tasks_root: str = ""  # folder the tasks' data paths are relative to (default: `root`)
    eval_sets: list[EvalSetConfig] = field(default_factory=list)  # further files to keep out (e.g. train splits)
    min_chars: NonNegInt = 20  # eval texts/lines shorter than this are too generic to match on (e.g. "خوب بود")


@dataclass
class SlurmConfig:
    partition: str = ""  # the partition the jobs run on (required with executor: slurm)
    time: str = "12:00:00"  # time limit of each job (sbatch --time)
    cpus_per_task: PosInt = 1
    mem_per_cpu_gb: PosInt = 2
    qos: str = ""  # sbatch --qos ("" = the cluster's default)
    array_parallel: NonNegInt = 0  # tasks of one stage running at once (0 = as many as Slurm starts)
    tasks_per_job: PosInt = 1  # tasks each job of an array runs one after the other (fewer, longer jobs)
    max_array_size: PosInt = 1001  # the cluster's MaxArraySize: larger stages are submitted as several arrays
    venv_path: str = ""  # activate script every job sources ("" = the virtual environment running langgraft)
    env_command: str = ""  # instead of venv_path: the shell line that sets up each job's environment
    job_name: str = "langgraft"  # jobs are named <job_name>-<dataset>-<stage>
    sbatch_args: dict[str, str] = field(default_factory=dict)  # further #SBATCH directives (account, constraint)


@dataclass
class RayConfig:
    address: str = ""  # ray.init address ("" = a Ray started on this machine, "auto" = the running cluster)
    cpus_per_task: PosInt = 1
    mem_per_cpu_gb: PosFloat = 2.0
    workers: NonNegInt = 0  # tasks of one stage running at once (0 = all of them)
    tasks_per_job: PosInt = 1  # tasks each Ray job runs one after the other
    time: NonNegInt = 0  # seconds a task may run before it is stopped (0 = no limit)


@dataclass
class PrepareConfig:
    root: str = "."  # folder the source globs are relative to
    normalizer: dict[str, dict[str, Any]] = field(default_factory=dict)  # per language code: normaliser settings
    # (what a tokenizer recorded in langgraft.json "normalizer"); missing languages use the defaults
    workers: PosInt = 2  # worker processes for the CPU-bound stages (executor: local)
    executor: Literal["local", "slurm", "ray"] = "local"  # where the engine's stages run (datatrove's executors)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # executor: slurm settings
    ray: RayConfig = field(default_factory=RayConfig)  # executor: ray settings
    chunk_mb: PosInt = 16  # large .txt/.jsonl files are split into chunks of about this size (one task each)
    strict: bool = False  # the first broken JSON line is an error instead of a counted drop
    preview_records: NonNegInt = 3
    datasets: list[DatasetConfig] = field(default_factory=list)
    leak_guard: LeakGuardConfig = field(default_factory=LeakGuardConfig)
