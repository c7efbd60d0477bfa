"""What Slicer imports at start-up needs nothing Slicer does not ship; cleanup() leaves no timer running.

Slicer imports every scripted module file when it starts. The module's start-up closure (XRayVOS.py and
everything its module-level code imports, transitively) may import only the standard library, numpy,
VTK, slicer, qt, ctk and the module's own packages: checked statically here (every branch), and by
importing it in a process where the packages Slicer does not ship cannot be imported (slicer_app_stub).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "XRayVOS"
ALLOWED = set(sys.stdlib_module_names) | {"numpy", "vtk", "vtkmodules", "slicer", "qt", "ctk", "PythonQt"}
OWN = ("XRayVOS", "xrayvos_gui", "xrayvos_slicer", "XRayVOSLib")


def _file(module: str, roots: dict[str, Path]) -> Path | None:
    parts = module.split(".")
    root = roots.get(parts[0])
    if root is None:
        return None
    base = root.joinpath(*parts[1:]) if len(parts) > 1 else root
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _executed_imports(tree: ast.Module, name: str, package: bool) -> list[str]:
    """Modules imported by code that runs at import time: not in functions, not under `if TYPE_CHECKING`."""
    out: list[str] = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = name.split(".") if package else name.split(".")[:-1]
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module
                out.append(base)
                out.extend(f"{base}.{alias.name}" for alias in node.names)  # submodules among the names
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(tree.body)
    return out


def startup_closure(entry: Path, roots: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(own modules executed, external top-level packages imported) when `entry` is imported."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = [entry.stem]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _file(name, roots)
        if path is None:
            if name.split(".")[0] not in roots:
                external.add(name.split(".")[0])
            continue  # an own name that is not a module (a class or function imported from one)
        seen.add(name)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # parent packages run first
        todo += _executed_imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
    return seen, external


ROOTS = {"XRayVOS": MODULE / "XRayVOS.py", "xrayvos_gui": MODULE / "xrayvos_gui",
         "xrayvos_slicer": MODULE / "xrayvos_slicer", "XRayVOSLib": REPO / "XRayVOSLib"}


def _roots_for_module_file() -> dict[str, Path]:
    roots = dict(ROOTS)
    roots["XRayVOS"] = MODULE / "XRayVOS"  # _file() adds .py
    return roots


def test_the_startup_closure_imports_only_what_slicer_ships():
    modules, external = startup_closure(MODULE / "XRayVOS.py", _roots_for_module_file())
    assert {"XRayVOS", "xrayvos_gui.module_logic", "xrayvos_gui.self_test", "xrayvos_slicer.logic",
            "XRayVOSLib.worker", "XRayVOSLib.settings"} <= modules  # the walk follows what really runs
    assert not {m for m in modules if m.startswith(("XRayVOSLib.synth", "XRayVOSLib.io", "XRayVOSLib.inference"))}
    assert external <= ALLOWED, f"Slicer imports these at start-up but does not ship them: {external - ALLOWED}"


def test_the_closure_check_flags_an_unshipped_import(tmp_path):
    """The same walk on a module whose helper imports cv2 at module level (and one only inside a function)."""
    package = tmp_path / "xrayvos_slicer"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("import cv2\n")
    (package / "lazy.py").write_text("def f():\n    import torch\n")
    (tmp_path / "Mod.py").write_text("from xrayvos_slicer import helper, lazy\nimport numpy\n")
    roots = {"Mod": tmp_path / "Mod", "xrayvos_slicer": package}
    modules, external = startup_closure(tmp_path / "Mod.py", roots)
    assert modules == {"Mod", "xrayvos_slicer", "xrayvos_slicer.helper", "xrayvos_slicer.lazy"}
    assert external == {"cv2", "numpy"}


def _scenario(name: str) -> dict:
    """Run startup_scenarios.<name>() where Slicer's application is stubbed and unshipped packages are blocked."""
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import slicer_app_stub as stub; stub.block(); stub.install()\n"
              f"import startup_scenarios; startup_scenarios.{name}()\n")
    done = subprocess.run([sys.executable, "-B", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(REPO))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slicer
def test_the_module_file_imports_where_unshipped_packages_cannot():
    report = _scenario("import_report")
    assert report["classes"] == ["XRayVOS", "XRayVOSLogic", "XRayVOSParameterNode", "XRayVOSTest", "XRayVOSWidget"]
    assert "xrayvos_slicer.logic" in report["own"] and "XRayVOSLib.worker" in report["own"]
    assert not [m for m in report["own"] if m.startswith("XRayVOSLib.synth")]


@pytest.mark.slicer
def test_cleanup_stops_every_timer_and_nothing_restarts_one():
    """Reload calls cleanup(): with a run in flight and the support list refresh pending, every timer stops,
    the runs are cancelled, and the slots a queued Qt event could still call start nothing afterwards."""
    report = _scenario("cleanup_report")
    assert report["timers"] == 4  # poll, cine selector filter, support list refresh, fine-tune poll
    assert all(report["parented"]) and not any(report["active"])
    assert not [events for events in report["after"] if "start" in events], "a slot restarted a timer"
    assert sorted(report["cancelled"]) == ["fine-tune", "propagation"] and report["run"] is None


def test_every_timer_of_the_module_has_a_qt_parent():
    unparented = []
    for path in MODULE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "QTimer"
                    and not node.args):
                unparented.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unparented, f"QTimer without a parent: {unparented}"
