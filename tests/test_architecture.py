"""The package's layout rules, checked on the source: imports go one way only, and no function takes more than six
positional parameters. docs/ARCHITECTURE.md explains the order."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "langgraft"

# Low to high: a unit (a top-level module or package) may import only units listed before it.
ORDER = ["errors", "outfiles", "consolelog", "rundir", "config", "hub", "safeload", "textfiles", "lang", "formats",
         "overlap", "model", "eval", "data", "tokenizer", "train", "ggufio", "modelcard", "export", "chat",
         "batch_generate", "pipeline", "demo", "cli_args", "cli", "__main__", "__init__"]


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
