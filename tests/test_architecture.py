"""The code keeps its shape: no import cycle, foundations import nothing above them, every room says what it holds."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "prl").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Every known module `path` imports, at module level or inside functions alike (the package root aside)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")
                base = ".".join([*package, base] if base else package)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # a name inside a module stands for the module
                name = name.rpartition(".")[0]
            if name and name not in (module, "prl"):  # the package's root only re-exports, lazily
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_package():
    modules = package_modules()
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    assert sum(len(edges) for edges in graph.values()) > 100  # the walk sees the imports
    assert not cycles(graph)


def test_no_import_cycle_among_the_benchmarks():
    modules = {path.stem: path for path in (ROOT / "benchmarks").glob("*.py")}
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    assert graph["throughput"] >= {"_plan", "_report", "_reference"}
    assert not cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_foundations_import_no_room_and_rooms_keep_their_order():
    modules = package_modules()
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    order = ["prl.errors", "prl.metrics", "prl.config", "prl.seeding", "prl.envs", "prl.nn"]
    order += ["prl.collection", "prl.learning", "prl.run", "prl.compat"]

    def layer(name):
        return max(i for i, prefix in enumerate(order) if name == prefix or name.startswith(prefix + "."))

    upward = [
        (name, target)
        for name, targets in graph.items()
        if name != "prl"
        for target in targets
        if layer(target) > layer(name)
    ]
    assert not upward


def test_every_module_opens_with_a_docstring():
    for name, path in package_modules().items():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and docstring.splitlines()[0].strip(), name


def test_ci_runs_the_readme_test_command_with_the_linter_and_the_type_checker_first():
    import re

    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(pip install -e \"\.\[test\]\" && .*?)\n```", readme)
    assert len(commands) == 1
    assert commands[0].split(" && ")[1:] == ["ruff check", "ruff format --check", "mypy", "pytest"]
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == commands[0]
