"""What installing langgraft asks of an environment: every imported package declared, ranges rather than exact pins
(constraints.txt holds the exact tested set), and nothing POSIX-only imported when a module loads."""

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "langgraft"
POSIX_ONLY = {"fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "posix", "readline", "crypt", "curses",
              "syslog"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extras: bool = True) -> list[Requirement]:
    proj = _project()
    reqs = [Requirement(r) for r in proj["dependencies"]]
    if extras:
        reqs += [Requirement(r) for group in proj["optional-dependencies"].values() for r in group]
    return reqs


def _top_level_imports():
    """(file, line, top-level module name, at module level?) for every absolute import under src/."""
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_level = {id(n) for n in tree.body} | {id(n) for top in tree.body if isinstance(top, (ast.If, ast.Try))
                                                     for n in ast.walk(top)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.lineno, node.module.split(".")[0], id(node) in module_level
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name.split(".")[0], id(node) in module_level


def test_every_imported_package_is_declared():
    declared = {canonicalize_name(r.name) for r in _requirements()}
    providers = metadata.packages_distributions()
    undeclared, third_party = [], set()
    for path, line, name, _ in _top_level_imports():
        if name in ("langgraft", "__future__") or name in sys.stdlib_module_names:
            continue
        third_party.add(name)
        dists = {canonicalize_name(d) for d in providers.get(name, [name])}
        if not dists & declared:
            undeclared.append(f"{path.relative_to(ROOT)}:{line} imports {name} (from {sorted(dists)})")
    assert {"torch", "numpy", "pyarrow", "jinja2", "huggingface_hub", "filelock"} <= third_party, third_party
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)


def test_dependencies_are_ranges_and_constraints_pin_a_version_inside_each():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    for req in _requirements():
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"exact pin in pyproject: {req}"
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt's {pins[name]} is outside {req}"
    assert str(pins["torch"]) == "2.13.0"  # README § Install: the CPU wheel 2.13.0+cpu meets this pin
    assert "datasketch" not in pins and "scipy" not in pins


def test_constraints_match_the_environment_the_tests_run_in():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for req in _requirements(extras=False):
        installed = metadata.version(req.name).split("+")[0]
        assert installed == pins[canonicalize_name(req.name)], f"{req.name} {installed} here, constraints.txt says " \
                                                               f"{pins[canonicalize_name(req.name)]}"


def test_nothing_posix_only_is_imported_when_a_module_loads():
    found = [f"{p.relative_to(ROOT)}:{line} imports {name} at module level"
             for p, line, name, top in _top_level_imports() if top and name in POSIX_ONLY]
    assert not found, "\n".join(found)
    # the same, executed: with the POSIX-only modules unimportable, every langgraft module still imports
    code = ("import sys, pkgutil, importlib\n"
            f"for name in {sorted(POSIX_ONLY - {'posix'})!r}:  # posix: the os module itself is built on it here\n"
            "    sys.modules[name] = None\n"
            "import langgraft\n"
            "names = [m.name for m in pkgutil.walk_packages(langgraft.__path__, 'langgraft.')"
            "         if not m.name.endswith('__main__')]\n"
            "for name in names:\n    importlib.import_module(name)\n"
            "print(len(names))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 40
