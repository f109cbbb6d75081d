"""The house's arrows, read from the code's own imports (every ``import`` and ``from ... import``,
also those inside functions): stages and the CLI sit on top of the library and nothing in the
library imports them; inside the library the layers point one way; there are no cycles. The
walker is checked on copies of ``src/`` with a bad import planted."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
TOP = "fairxray"
# What each library package may import from the others (besides the shared root modules:
# config, paths, errors, hashing, profiles and the package root). Arrows point down the pipeline.
ALLOWED = {
    "data": set(),
    "models": set(),
    "metrics": {"data"},
    # mitigate: the loss hooks and post-processing rules fit() and train apply, so adapt calls
    # it (adapt -> mitigate) and it knows nothing of adapt.
    "mitigate": {"data", "metrics"},
    "adapt": {"data", "models", "metrics", "mitigate"},
    "tune": {"adapt", "data", "models", "metrics", "mitigate"},
    "export": {"adapt", "data", "models", "metrics"},
    "track": {"data", "metrics", "mitigate"},
    "report": {"metrics", "data", "mitigate"},
    "reproduce": {"data", "models"},
    # The `check` stage's library validates every section before any work: it asks the model and
    # method registries, the fit and tune checks and the real-input preflight; nothing imports it.
    "check": {"adapt", "data", "models", "reproduce", "tune", "mitigate"},
}
ROOT_MODULES = {"config", "paths", "errors", "hashing", "profiles", ""}
FRONT = ("stages", "cli")  # the command line: may import anything, imported by nothing below it


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(root: Path, name: str) -> str:
    """The module a dotted name refers to (a module, a package, or a name inside a module)."""
    parts = name.split(".")
    while parts:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return name


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the fairxray modules it imports, for every module under ``root/fairxray``."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / TOP).rglob("*.py")):
        mod = module_name(root, path)
        edges = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                if n == TOP or n.startswith(TOP + "."):
                    target = resolve(root, n)
                    if target != mod:
                        edges.add(target)
    return graph


def _package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and (parts[1] in ALLOWED or parts[1] in FRONT) else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(root: Path) -> list[str]:
    graph = import_graph(root)
    out = []
    for mod, targets in sorted(graph.items()):
        src_pkg = _package(mod)
        for t in sorted(targets):
            dst_pkg = _package(t)
            if src_pkg in FRONT:
                continue
            if dst_pkg in FRONT:
                out.append(f"{mod} imports the command line ({t})")
            elif src_pkg and dst_pkg and dst_pkg != src_pkg and dst_pkg not in ALLOWED[src_pkg]:
                out.append(f"{mod} imports {t}: {src_pkg} may not depend on {dst_pkg}")
            elif not src_pkg and dst_pkg:
                out.append(f"{mod} (a shared root module) imports {t}")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return out


def test_the_library_has_one_way_arrows_and_no_cycles():
    assert violations(SRC) == []


def test_every_library_package_is_known_to_the_rules():
    packages = {p.name for p in (SRC / TOP).iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"resources"} == set(ALLOWED) | {"stages"}
    roots = {p.stem for p in (SRC / TOP).glob("*.py")} - {"__init__", "cli"}
    assert roots <= ROOT_MODULES


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        ("metrics/fairness.py", "from fairxray.stages import train", "imports the command line"),
        ("adapt/fit/loop.py", "import fairxray.cli", "imports the command line"),
        ("metrics/evaluate.py", "from fairxray.models import create", "metrics may not depend on models"),
        ("metrics/bootstrap.py", "from fairxray.track.runs import track", "metrics may not depend on track"),
        ("models/base.py", "from fairxray.adapt import build", "models may not depend on adapt"),
        ("data/cache.py", "from fairxray.data.images import build_cache", "import cycle"),
        ("paths.py", "from fairxray.metrics import fairness", "shared root module"),
    ],
)
def test_a_planted_bad_import_is_caught(tmp_path, file, line, expected):
    root = tmp_path / "src"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / TOP / file
    # Inside a function, as lazy imports are written: the walker sees those too.
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {line}\n")
    found = violations(root)
    assert any(expected in v for v in found), found


def _code_lines(path: Path) -> int:
    """Lines that are neither blank, comments nor docstrings."""
    text = path.read_text()
    docs: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs |= set(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for i, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and i not in docs
    )


def test_stages_are_thin():
    """A stage parses arguments, loads params, calls one library function, prints a summary."""
    sizes = {p.name: _code_lines(p) for p in (SRC / TOP / "stages").glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 48} == {}


def test_no_function_is_long():
    long = []
    for path in (SRC / TOP).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 85:
                long.append(f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []
