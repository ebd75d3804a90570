"""The package's structure: no import cycles, and a working import from the source tree."""
import ast
import os
import pathlib
import subprocess
import sys

import fastconv

ROOT = pathlib.Path(__file__).resolve().parents[1]


def package_imports():
    """fastconv module -> the fastconv modules it imports at module level (installed files)."""
    root = pathlib.Path(fastconv.__file__).parent
    files = {}
    paths = [pathlib.Path(d, f) for d, _, names in os.walk(root, followlinks=True)
             for f in names if f.endswith(".py")]
    for path in sorted(paths):
        parts = ("fastconv", *path.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:   # lazy imports are fine
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:          # `from . import backends` names a module
                    deps.add(f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in files else mod)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycles(graph):
    """Import cycles of ``graph`` (module -> modules), each as a list of module names.

    A package importing its own children through ``__init__`` is no cycle.
    """
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if dep == "fastconv" or node.startswith(dep + "."):
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_cycle_finder_finds_a_cycle():
    graph = {"fastconv.a": {"fastconv.b"}, "fastconv.b": {"fastconv.c"}, "fastconv.c": {"fastconv.a"}}
    assert find_cycles(graph) == [["fastconv.a", "fastconv.b", "fastconv.c", "fastconv.a"]]
    assert find_cycles({"fastconv.a": {"fastconv.b"}, "fastconv.b": set()}) == []


def test_no_import_cycles():
    graph = package_imports()
    assert find_cycles(graph) == []
    assert "fastconv.tuner" not in graph["fastconv.backends"]       # policy above the table
    assert "fastconv.backends" in graph["fastconv.tuner"]


def test_the_source_tree_imports_a_working_fastconv():
    """`python -c "import fastconv"` at the repository root (source folder first on sys.path)."""
    script = ("import numpy as np, fastconv, fastconv.kernels.im2col as m; "
              "print(fastconv.__file__); print(m.__name__); "
              "print(fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), backend='naive').sum())")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    file, module, total = done.stdout.split()
    assert pathlib.Path(file).resolve().parent == (ROOT / "fastconv").resolve()
    assert module == "fastconv.kernels.im2col" and float(total) == 36.0
