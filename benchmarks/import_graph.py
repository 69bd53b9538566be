"""kss's import graph from the source (ast, nothing imported): edges, cycles, imports inside functions.

    python benchmarks/import_graph.py            # this tree
    python benchmarks/import_graph.py /tmp/old   # another checkout (its kss/ folder)

A module-level `from kss.x import y` is an edge x -> y's module; an import inside a function is listed
separately (and counts for the cycles too, since it still ties the two modules together). Exit 1
when there is a cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, int]], dict[str, tuple[str, int]]]:
    """(module -> kss modules it imports, [(module, target, line) inside functions], largest function)."""
    files = {module_name(root, p): p for p in sorted((root / "kss").rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    inner: list[tuple[str, str, int]] = []
    largest: dict[str, tuple[str, int]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for f in functions:
            largest[f"{name}.{f.name}"] = (str(path.relative_to(root)), f.end_lineno - f.lineno + 1)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from kss.a import b`: the module kss.a.b when there is one, else kss.a
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
                    if id(node) in inside and (name, target, node.lineno) not in inner:
                        inner.append((name, target, node.lineno))
    return graph, inner, largest


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    graph, inner, largest = imports(root)
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module])) or '-'}")
    print(f"\nimports inside functions: {len(inner)}")
    for module, target, line in inner:
        print(f"  {module}:{line} -> {target}")
    found = cycles(graph)
    print(f"\ncycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    print("\nlargest functions:")
    for name, (path, lines) in sorted(largest.items(), key=lambda item: -item[1][1])[:5]:
        print(f"  {lines:4d} lines  {name}  ({path})")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
