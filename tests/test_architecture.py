"""The package's layout rules, checked on the source: imports go one way only, no function takes more than six
positional parameters, language codes and names live in lang/, and the files passed between stages are named only
in formats/. docs/ARCHITECTURE.md explains the order."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "langgraft"

# Low to high: a unit (a top-level module or package) may import only units listed before it.
ORDER = ["errors", "outfiles", "consolelog", "rundir", "config", "options", "hub", "safeload", "textfiles", "lang",
         "formats", "overlap", "model", "eval", "data", "tokenizer", "train", "ggufio", "export", "generate",
         "pipeline", "demo", "cli_args", "cli", "__main__", "__init__"]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path):
    """(line, imported langgraft module) for every import in the file, lazy ones inside functions included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("langgraft"):
            if node.module == "langgraft":
                yield from ((node.lineno, f"langgraft.{a.name}") for a in node.names)
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("langgraft"))


def _sources():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40, f"found only {len(files)} source files under {SRC}"
    return files


def test_every_unit_has_a_place_in_the_order():
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in _sources()}
    assert units == set(ORDER), f"units missing from ORDER: {units - set(ORDER)}; listed but absent: {set(ORDER) - units}"


def test_no_module_imports_upward():
    upward, checked = [], 0
    for path in _sources():
        here = path.relative_to(SRC).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            there = _unit(module)
            checked += 1
            if there != here and ORDER.index(there) > ORDER.index(here):
                upward.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert checked > 100, f"only {checked} langgraft imports seen: the scan is broken"
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_relative_imports_are_not_used():
    # the order check reads absolute imports; a relative one would slip past it
    found = [f"{p.relative_to(SRC)}:{n.lineno}" for p in _sources() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert not found, found


def test_no_function_takes_more_than_six_positional_parameters():
    wide, seen = [], 0
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                seen += 1
                args = node.args.posonlyargs + node.args.args
                names = [a.arg for a in args if a.arg not in ("self", "cls")]
                if len(names) > 6:
                    wide.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}({', '.join(names)})")
    assert seen > 300, f"only {seen} functions seen: the scan is broken"
    assert not wide, "functions with more than six positional parameters:\n" + "\n".join(wide)


def _code_strings(path: Path):
    """(line, text) of every string literal in the file that is not a docstring (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_language_codes_and_names_only_in_lang():
    # a new language is added in lang/ alone; a default or a display name written elsewhere would not follow it
    from langgraft.lang import LANGUAGES, NAMES

    name = re.compile(r"\b(" + "|".join(NAMES.values()) + r")\b")
    found = [f"{p.relative_to(SRC)}:{line} {text!r}" for p in _sources() if p.relative_to(SRC).parts[0] != "lang"
             for line, text in _code_strings(p) if text in LANGUAGES or name.search(text)]
    assert not found, "language codes or names outside lang/ (use langgraft.lang):\n" + "\n".join(found)


# the files of a training run that other stages read are named by the run folder's owner
OWNERS = (*sorted((SRC / "formats").glob("*.py")), SRC / "rundir" / "training.py")


def _format_names() -> dict[str, str]:
    """{file name: owning module} from the `…NAME = "file"` constants of formats/ and rundir/training.py."""
    names = {}
    for path in OWNERS:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    any(isinstance(t, ast.Name) and t.id.endswith("NAME") for t in node.targets):
                names[node.value.value] = path.stem
    return names


def test_files_passed_between_stages_are_named_only_in_formats():
    # one module owns each such file: its name written anywhere else is a reader or writer that skips the checks
    names = _format_names()
    assert {"new_tokens.json", "extend_report.json", "dataset.json", "results.json", "summary.json",
            "train_config.json", "metrics.jsonl"} <= set(names), names
    # consolelog.MARKERS names the files that show langgraft wrote a folder; it sits below every owner
    found = [f"{p.relative_to(SRC)}:{line} {text!r} ({names[text.rpartition('/')[2]]}.py)"
             for p in _sources() if p not in OWNERS and p.name != "consolelog.py"
             for line, text in _code_strings(p) if text.rpartition("/")[2] in names]
    assert not found, "between-stage file names outside formats/:\n" + "\n".join(found)


def test_no_module_is_over_400_lines():
    long = [f"{p.relative_to(SRC)}: {n} lines" for p in _sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    assert not long, "modules over 400 lines (split them by concept):\n" + "\n".join(long)
