"""The house's measured shape: import cycles, imports inside functions, and the longest functions.

Usage: ``python tools/house_metrics.py [ROOT] [--list]`` (ROOT: a checkout, default the current directory).
Cycles are strongly connected groups of modules in the package's import graph (imports under ``if
TYPE_CHECKING:`` left out, imports of the package's ``__init__`` too: it re-exports every layer); the
in-function count is every import statement inside a function, and of those the imports of the package's
own modules; the longest functions count every line from ``def`` to the end, docstring included.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((root / "subclone_viz").rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The package's modules an import statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for _ in range(max(node.level - 1, 0)):
        base = base.rsplit(".", 1)[0]
    target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
    return [
        f"{target}.{a.name}" if f"{target}.{a.name}" in known else target
        for a in node.names
        if f"{target}.{a.name}" in known or target in known
    ]


def scan(root: Path):
    known = modules(root)
    edges: dict[str, set[str]] = {name: set() for name in known}
    lazy: list[tuple[str, int, str]] = []
    lengths: list[tuple[int, str]] = []

    def walk(name: str, path: Path, node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((child.end_lineno - child.lineno + 1, f"{name}.{child.name}"))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function:
                    lazy.append((name, child.lineno, ast.unparse(child)))
                edges[name].update(t for t in imported(name, path, child, known) if t not in (name, "subclone_viz"))
            walk(name, path, child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    for name, path in known.items():
        walk(name, path, ast.parse(path.read_text(encoding="utf-8")), False)
    return edges, lazy, sorted(lengths, reverse=True)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path("."))
    parser.add_argument("--list", action="store_true", help="list every in-function import")
    args = parser.parse_args()
    edges, lazy, lengths = scan(args.root)
    found = cycles(edges)
    print(f"import cycles: {len(found)}")
    for group in found:
        print("  ", ", ".join(group))
    own = [entry for entry in lazy if entry[2].startswith("from .")]
    print(f"imports inside functions: {len(lazy)} ({len(own)} of the package's own modules)")
    for entry in lazy if args.list else own:
        print(f"   {entry[0]}:{entry[1]} {entry[2]}")
    print(f"functions over 60 lines: {sum(1 for n, _ in lengths if n > 60)}; the longest:")
    for n, name in lengths[:10]:
        print(f"  {n:4d} {name}")


if __name__ == "__main__":
    main()
