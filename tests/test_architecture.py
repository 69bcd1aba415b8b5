"""The house of docs/ARCHITECTURE.md holds: every import runs to the same or a lower floor, no modules
import each other in a circle, no file is over 500 lines and no function over 100. Read from the
code's own imports (function-level ones included), nothing imported or run."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the floor of each part of the house, lowest first (a module not named here is a script: the top)
FLOORS = [("utils.errors", 0), ("utils.dist", 0), ("utils.methods", 0), ("utils.args", 1), ("models", 1),
          ("utils.protocol", 2), ("utils.science", 3), ("utils.training", 4), ("utils.study", 5)]
TOP = 6
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 100


def sources():
    """{module name: path} of the project's Python files (tests and benchmarks are not rooms)."""
    out = {}
    for folder, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(folder, ROOT)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (rel != "." or d in ("utils", "models", "scripts"))]
        for f in files:
            if f.endswith(".py"):
                parts = os.path.normpath(os.path.join(rel, f[:-3])).split(os.sep)
                parts = [p for p in parts if p != "."]
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = os.path.join(folder, f)
    return out


def floor(module):
    return next((f for prefix, f in FLOORS if module == prefix or module.startswith(prefix + ".")), TOP)


def imports(module, path, known):
    """The project modules `module` imports (at any depth of its code), resolved to the most specific
    known module."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]   # a module, or a name of module `base`
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph():
    known = sources()
    return known, {m: imports(m, p, known) for m, p in known.items()}


def test_every_import_runs_to_the_same_or_a_lower_floor(graph):
    _, edges = graph
    upward = sorted(f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
                    for a, bs in edges.items() for b in bs if floor(b) > floor(a))
    assert not upward, "\n".join(upward)


def test_no_circle(graph):
    _, edges = graph
    state, stack, circles = {}, [], []

    def visit(m):   # depth-first search; an edge back to a module on the stack closes a circle
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                circles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(circles)


def test_no_room_over_500_lines_and_no_function_over_100(graph):
    known, _ = graph
    long_files, long_functions = [], []
    for module, path in sorted(known.items()):
        text = open(path).read()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{os.path.relpath(path, ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)


def test_the_checks_see_what_they_should(tmp_path):
    """The reading finds a function-level import and one from a higher floor, on a made-up module."""
    known = {"utils.errors": None, "utils.protocol.files": None, "utils.study.plan": None}
    assert floor("utils.protocol.files") < floor("utils.study.plan") < floor("train")
    probe = tmp_path / "files.py"
    probe.write_text("from utils.study.plan import make_plan\ndef f():\n    import utils.errors\n")
    assert imports("utils.protocol.files", str(probe), known) == {"utils.study.plan", "utils.errors"}
