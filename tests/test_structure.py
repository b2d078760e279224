"""The package's structure: no module of llmdiff imports, directly or through others, a module that imports it.

Every import counts, also one inside a function: a cycle hidden there still means that neither module can be read or
tested without the other, and leaves open which of them owns the piece they share.
"""

import ast
from pathlib import Path

import llmdiff

PACKAGE = Path(llmdiff.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of `modules` that the module `name` (its source text) imports anywhere in its body:
    ``import a.b``, ``from a import b`` (b a module or a name in a), relative or absolute. A package's
    ``__init__`` that Python runs before one of its modules is not counted: it is not what the import asks for."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y: `level` dots, the first one this package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module
            for alias in node.names:  # a submodule, else a name defined in the module
                submodule = f"{source_module}.{alias.name}"
                found.add(submodule if submodule in modules else source_module)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the llmdiff modules it imports; the denoiser registry imports the modules it names on use."""
    from llmdiff.denoisers import DENOISERS

    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {name: imported_modules(path.read_text(), name, path.name == "__init__.py", set(files))
             for name, path in sorted(files.items())}
    graph["llmdiff.denoisers"] |= {f"llmdiff.denoisers.{path.partition(':')[0]}" for path in DENOISERS.values()}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_kind_of_import_is_an_edge():
    modules = {"llmdiff", "llmdiff.a", "llmdiff.b", "llmdiff.b.c", "llmdiff.d"}
    source = "import llmdiff.a\ndef f():\n    from .c import x\n    from .. import d\n    from ..a import y\n"
    assert imported_modules(source, "llmdiff.b", True, modules) == {"llmdiff.a", "llmdiff.b.c", "llmdiff.d"}
    assert imported_modules("from . import b, a\n", "llmdiff.d", False, modules) == {"llmdiff.a", "llmdiff.b"}
    assert imported_modules("from . import __version__\n", "llmdiff.d", False, modules) == {"llmdiff"}
    graph = import_graph()
    assert "llmdiff.config" in graph["llmdiff.training.build"]
    assert "llmdiff.denoisers.adapter" in graph["llmdiff.denoisers"]  # through the registry


def test_find_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_core_install_leaves_the_studio_and_browser_packages_to_extras():
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert not any(name in core for name in ("gradio", "playwright", "pytest")), core
    assert any("gradio" in d for d in project["optional-dependencies"]["studio"])
    assert any("playwright" in d for d in project["optional-dependencies"]["dev"])


def test_serve_without_the_studio_extra_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    from llmdiff.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'llmdiff[studio]'" in err[0], err
