"""The layout is the architecture: which side may import which, checked on the source.

- ``mxnb.protocol`` imports neither side;
- ``mxnb.rank`` never imports ``mxnb.kernel`` (nor the trace model or views);
- ``mxnb.controller`` (ipyparallel's controller, run by the kernel) imports
  only ``mxnb.protocol``;
- of the kernel side, only ``mxnb.kernel.remote`` imports ``mxnb.rank``;
- no two modules share a name, none is much over 400 lines (nor are the C
  files), and there is no import cycle, not even one hidden inside a function.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mxnb"
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks: imports there never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The mxnb modules ``path`` imports at run time, at any depth of its code."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mxnb"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("mxnb"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


GRAPH = {name: _imports(path, name, set(_modules())) for name, path in _modules().items()}


def _side(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "top"


def test_the_graph_is_read():
    assert "mxnb.kernel.remote" in GRAPH and "mxnb.rank.calls" in GRAPH["mxnb.kernel.remote"]


def test_protocol_imports_neither_side():
    for name, deps in GRAPH.items():
        if _side(name) == "protocol":
            bad = {d for d in deps if _side(d) not in ("protocol", "top")}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_the_rank_side_never_imports_the_kernel_side():
    for name, deps in GRAPH.items():
        if _side(name) == "rank":
            bad = {d for d in deps if _side(d) in ("kernel", "trace", "views")}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_the_controller_imports_only_what_both_sides_share():
    deps = set().union(*(d for name, d in GRAPH.items() if _side(name) == "controller"))
    assert deps and {_side(d) for d in deps} <= {"protocol", "controller"}


def test_only_remote_sends_calls_to_the_ranks():
    importers = sorted(
        name
        for name, deps in GRAPH.items()
        if _side(name) != "rank" and any(_side(d) == "rank" for d in deps)
    )
    assert importers == ["mxnb.kernel.remote"]


def test_no_import_cycles():
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the path, 2 done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(GRAPH[m]):
            if state[d] == 1:
                cycle = [*path[path.index(d) :], d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state[d] == 0:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if state[m] == 0:
            visit(m)


def test_no_two_modules_share_a_name():
    names: dict[str, list[str]] = defaultdict(list)
    for module, path in _modules().items():
        if path.name not in ("__init__.py", "__main__.py"):
            names[path.stem].append(module)
    assert {k: v for k, v in names.items() if len(v) > 1} == {}


def test_modules_stay_small():
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    # the op path in C too: one file and the parts it includes
    sizes |= {p.name: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.[ch]")}
    long = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert long == {}
