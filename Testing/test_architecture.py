"""Static architecture checks: no import cycle among the project's modules, and a torch-free core.

Every .py of XRayVOSLib/, the Slicer module (XRayVOS/: XRayVOS.py, xrayvos_gui, xrayvos_slicer) and tools/
is parsed with `ast` (nothing is imported). An edge M -> X is recorded for every import in M, at module
level and inside functions (a deferred import still closes a cycle when it runs), skipping only
`if TYPE_CHECKING:` blocks, which never run:
- `import a.b.c` and `from a.b import n` import the module they name; `from a.b import n` where a.b.n is a
  module imports that submodule too;
- importing a module runs the __init__ of each package above it, so those packages are imported too, except
  the packages above M itself: Python runs them before M starts, so reaching them again adds no dependency
  (and a submodule pulled with `from . import sibling` does not depend on its own package's __init__);
- relative imports are resolved against M's package, `importlib.import_module("literal")` counts as an import.
The three source roots are the folders each tree is run from: the repository root (XRayVOSLib.*), XRayVOS/
(Slicer puts it on sys.path: XRayVOS, xrayvos_gui.*, xrayvos_slicer.*) and tools/ (`python tools/card.py`
puts tools/ first on sys.path, so `import card` there means tools/card.py).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {  # folder on sys.path -> the trees under it that belong to the project
    REPO_ROOT: ("XRayVOSLib",),
    REPO_ROOT / "XRayVOS": ("XRayVOS.py", "xrayvos_gui", "xrayvos_slicer"),
    REPO_ROOT / "tools": (".",),
}
TORCH_FREE = ("XRayVOSLib.settings", "XRayVOSLib.events", "XRayVOSLib.runtime", "XRayVOSLib.outputs",
              "XRayVOSLib.propagation")
TORCH_MODULES = ("torch", "torchvision", "monai", "safetensors.torch")  # each imports torch when imported


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name, project module or not
    names: tuple[str, ...]  # for `from target import names`; () for `import target`
    line: int
    module_level: bool


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: list[Import] = field(default_factory=list)
    edges: dict[str, tuple[int, bool]] = field(default_factory=dict)  # project module -> (line, module level)


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def find_modules(roots: dict[Path, tuple[str, ...]] = SOURCE_ROOTS) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for root, trees in roots.items():
        for tree in trees:
            start = root / tree
            paths = [start] if start.is_file() else sorted(start.glob("*.py" if tree == "." else "**/*.py"))
            for path in paths:
                name, is_package = module_name(root, path)
                assert name not in modules, f"{path}: module name {name} also at {modules[name].path}"
                modules[name] = Module(name, path, is_package)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: Module, level: int, target: str | None) -> str:
    """The absolute name of `from .(level).target import ...` written in `module`."""
    if level == 0:
        return target or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def parse_imports(module: Module) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, module_level)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, (), child.lineno, module_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module != "__future__":
                target = _absolute(module, child.level, child.module)
                found.append(Import(target, tuple(a.name for a in child.names), child.lineno, module_level))
            elif isinstance(child, ast.Call) and _import_module_literal(child):
                found.append(Import(child.args[0].value, (), child.lineno, module_level))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, module_level and not nested)

    visit(ast.parse(module.path.read_text(encoding="utf-8"), str(module.path)), True)
    return found


def _import_module_literal(call: ast.Call) -> bool:
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )
    return named and len(call.args) == 1 and isinstance(call.args[0], ast.Constant) and isinstance(
        call.args[0].value, str
    )


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(module: Module, imp: Import, modules: dict[str, Module]) -> list[str]:
    """The project modules one import statement runs (see the module docstring for the rules)."""
    own_packages = set(_ancestors(module.name)) | ({module.name} if module.is_package else set())
    submodules = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in modules]
    out = [a for a in _ancestors(imp.target) if a not in own_packages]
    only_submodules = bool(imp.names) and len(submodules) == len(imp.names)
    if imp.target in modules and not (imp.target in own_packages and only_submodules):
        out.append(imp.target)
    return [m for m in out + submodules if m in modules and m != module.name]


def build_graph(roots: dict[Path, tuple[str, ...]] = SOURCE_ROOTS) -> dict[str, Module]:
    modules = find_modules(roots)
    for module in modules.values():
        module.imports = parse_imports(module)
        for imp in module.imports:
            for target in imported_modules(module, imp, modules):
                line, level = module.edges.get(target, (imp.line, False))
                module.edges[target] = (min(line, imp.line), level or imp.module_level)
    return modules


def strongly_connected(modules: dict[str, Module]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(modules[start].edges)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(modules[child].edges))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in modules[node].edges:
                    components.append(sorted(component))
    return components


def one_cycle(modules: dict[str, Module], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component (BFS)."""
    members, start = set(component), component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(modules[node].edges):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child in members and child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{component} is not a cycle")


def describe_cycles(modules: dict[str, Module]) -> list[str]:
    lines = []
    for component in strongly_connected(modules):
        cycle = one_cycle(modules, component)
        steps = []
        for a, b in zip(cycle, cycle[1:]):
            line, module_level = modules[a].edges[b]
            where = modules[a].path.relative_to(REPO_ROOT) if modules[a].path.is_relative_to(REPO_ROOT) else a
            steps.append(f"{a} -> {b} ({where}:{line}{'' if module_level else ', deferred'})")
        lines.append(f"cycle among {', '.join(component)}:\n    " + "\n    ".join(steps))
    return lines


def imports_torch(imp: Import) -> bool:
    return any(imp.target == t or imp.target.startswith(t + ".") for t in TORCH_MODULES) or any(
        f"{imp.target}.{n}" in TORCH_MODULES for n in imp.names
    )


def loaded_at_import(modules: dict[str, Module], name: str) -> set[str]:
    """Every project module that importing `name` runs: its packages, then module-level imports, transitively."""
    seen: set[str] = set()
    todo = [m for m in (*_ancestors(name), name) if m in modules]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(t for t, (_, module_level) in modules[current].edges.items() if module_level)
    return seen


def torch_violations(modules: dict[str, Module], core: tuple[str, ...] = TORCH_FREE) -> list[str]:
    """Core modules that load torch on import, or import (even inside a function) a module that does."""
    problems = []
    members = [m for m in sorted(modules) if any(m == c or m.startswith(c + ".") for c in core)]
    for name in members:
        reached = set(loaded_at_import(modules, name))
        for target, (_, module_level) in modules[name].edges.items():
            if not module_level:  # a deferred import of a project module: it must not load torch either
                reached |= loaded_at_import(modules, target)
        for other in sorted(reached):
            for imp in modules[other].imports:
                if imp.module_level and imports_torch(imp):
                    via = "" if other == name else f" through {other}"
                    problems.append(f"{name} loads {imp.target}{via} ({modules[other].path.name}:{imp.line})")
    return problems


# --- the checks on this repository ---------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    modules = build_graph()
    assert "XRayVOSLib.io.cine" in modules and "xrayvos_slicer.logic" in modules and "card" in modules
    cycles = describe_cycles(modules)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(cycles)


def test_core_is_torch_free() -> None:
    modules = build_graph()
    assert all(c in modules for c in TORCH_FREE), [c for c in TORCH_FREE if c not in modules]
    problems = torch_violations(modules)
    assert not problems, "the torch-free core loads torch:\n" + "\n".join(problems)


# --- the detector itself, on small packages written to tmp_path ---------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> dict[Path, tuple[str, ...]]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return {root: ("pkg",)}


def test_detector_reports_a_cycle_through_a_deferred_and_a_relative_import(tmp_path: Path) -> None:
    roots = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",  # a submodule named in `from . import`
        "pkg/b.py": "def f():\n    from pkg.sub.c import g\n    return g\n",  # deferred
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import x\n",  # two levels up
        "pkg/d.py": "import pkg.a\n",  # outside the cycle, imports into it
    })
    modules = build_graph(roots)
    assert strongly_connected(modules) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    (report,) = describe_cycles(modules)
    assert "pkg.a -> pkg.b" in report and "pkg.b -> pkg.sub.c" in report and "deferred" in report
    assert "pkg.sub.c -> pkg.a" in report


def test_detector_counts_a_package_init_that_reexports(tmp_path: Path) -> None:
    # pkg/__init__ re-exports from a; a imports a name pkg/__init__ defines: a real cycle. A sibling import
    # (b from a) is not one, and neither is a TYPE_CHECKING import.
    roots = write_package(tmp_path, {
        "pkg/__init__.py": "from .a import f\nVERSION = 1\n",
        "pkg/a.py": "from . import b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import T\n",
        "pkg/b.py": "import os\n",
        "pkg/c.py": "from pkg.a import f\n",
    })
    assert strongly_connected(build_graph(roots)) == []
    (tmp_path / "pkg/b.py").write_text("from pkg import VERSION\n")
    assert strongly_connected(build_graph(roots)) == [["pkg", "pkg.a", "pkg.b"]]


def test_torch_check_follows_module_level_imports_and_deferred_project_imports(tmp_path: Path) -> None:
    roots = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/core.py": "from pkg import helper\ndef device():\n    import torch\n",  # a deferred torch is allowed
        "pkg/helper.py": "import numpy\n",
        "pkg/heavy.py": "import torch.nn\n",
    })
    modules = build_graph(roots)
    assert torch_violations(modules, ("pkg.core",)) == []
    (tmp_path / "pkg/helper.py").write_text("def later():\n    from pkg import heavy\n")
    assert torch_violations(build_graph(roots), ("pkg.core",)) == []  # helper loads heavy only when called
    (tmp_path / "pkg/core.py").write_text("def later():\n    from pkg.heavy import x\n")
    assert torch_violations(build_graph(roots), ("pkg.core",)) == ["pkg.core loads torch.nn through pkg.heavy "
                                                                  "(heavy.py:1)"]
