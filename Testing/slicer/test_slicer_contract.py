"""The module against Slicer's real API, without Slicer: every slicer.util call in XRayVOS/ exists in
slicer-core's copy of Slicer's own slicer/util.py and binds to its signature, and every MRML / VTK method
the module calls on a node exists on that node's real class and takes that many arguments.

The node's class comes from how the code obtains it: a constructor (slicer.vtkMRMLSequenceNode()),
AddNewNodeByClass("vtkMRMLSegmentationNode"), a parameter or return annotation ("slicer.vtkMRML..."),
the return type VTK documents for the method that produced it (GetMasterSequenceNode ->
vtkMRMLSequenceNode), or a package helper's return annotation. A call whose receiver is only known as
a generic base class (GetNthDataNode -> vtkMRMLNode) is checked where the base has the method and
counted as unknown otherwise. What only the Slicer application has (slicer.app, slicer.modules, Qt,
slicer.packaging of 5.12) is not here: test_slicer_dependencies and the self-test cover that.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slicer

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "XRayVOS"
GENERIC = {"vtkObject", "vtkDataObject", "vtkMRMLNode", "vtkMRMLStorableNode", "vtkMRMLTransformableNode",
           "vtkMRMLDisplayableNode"}
# Slicer application calls whose result slicer-core cannot show: ScriptedLoadableModuleLogic.getParameterNode
# returns the module's vtkMRMLScriptedModuleNode (Base/Python/slicer/ScriptedLoadableModule.py, 5.10 and 5.12).
KNOWN_RETURNS = {("ScriptedLoadableModuleLogic", "getParameterNode"): "vtkMRMLScriptedModuleNode"}
PACKAGES = ("xrayvos_slicer", "xrayvos_gui")


def _slicer():
    return pytest.importorskip("slicer")


def vtk_class(name: str):
    import vtk

    slicer = _slicer()
    return getattr(slicer, name, None) or getattr(vtk, name, None)


def _split_top_level(text: str) -> list[str]:
    depth, parts, current = 0, [], ""
    for ch in text:
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + ([current.strip()] if current.strip() else [])


def vtk_signatures(cls, method: str) -> tuple[list[tuple[int, int]], set[str]] | None:
    """([(required, total) arguments per overload], return types) from the Python signatures VTK writes at
    the top of each method's docstring (`Name(self, a:int, b:bool=True) -> vtkX`, then a `C++:` line)."""
    doc = getattr(getattr(cls, method, None), "__doc__", None) or ""
    arities, returns = [], set()
    for match in re.finditer(rf"^{method}\(", doc, re.M):
        depth, i = 1, match.end()
        while i < len(doc) and depth:
            depth += 1 if doc[i] in "([{" else -1 if doc[i] in ")]}" else 0
            i += 1
        params = " ".join(doc[match.end():i - 1].split())
        tail = doc[i:doc.find("C++:", i)] if "C++:" in doc[i:] else ""
        parts = [p for p in _split_top_level(params) if p != "self"]
        arities.append((sum("=" not in p for p in parts), len(parts)))
        ret = " ".join(tail.split()).removeprefix("->").strip()
        returns.add(ret or "None")
    return (arities, returns) if arities else None


@dataclass
class Finding:
    where: str
    text: str


@dataclass
class Report:
    checked: list[tuple[str, str]] = field(default_factory=list)  # (class, method) calls checked
    util: list[str] = field(default_factory=list)
    unknown: int = 0
    errors: list[Finding] = field(default_factory=list)


def _annotation_type(node: ast.expr | None):
    """'vtkX' | ('tuple', [...]) | ('list', t) | None from an annotation (string annotations parsed)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return _annotation_type(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "slicer" and node.attr.startswith("vtk"):
        return node.attr
    if isinstance(node, ast.BinOp):  # X | None
        sides = [t for t in (_annotation_type(node.left), _annotation_type(node.right)) if t is not None]
        return sides[0] if len(sides) == 1 else None
    if isinstance(node, ast.Subscript):
        outer = getattr(node.value, "id", "")
        inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "tuple":
            return ("tuple", [_annotation_type(e) for e in inner])
        if outer in ("list", "Sequence", "Iterable"):
            return ("list", _annotation_type(inner[0]))
    return None


class Module:
    """One source file: its functions (with their classes) and the package modules it imports by name."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.functions: dict[str, ast.FunctionDef] = {}
        self.methods: dict[tuple[str, str], ast.FunctionDef] = {}
        self.aliases: dict[str, str] = {}  # local name -> package module ("segments" for `from . import segments as S`)
        self.imported: dict[str, str] = {}  # local name -> package module defining it
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self.methods[(node.name, item.name)] = item
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            whole = (node.level and not module) or module in PACKAGES  # `from . import segments as S`
            inside = (node.level and module) or module.startswith(tuple(f"{p}." for p in PACKAGES))
            for alias in node.names:
                if whole:
                    self.aliases[alias.asname or alias.name] = alias.name
                elif inside:
                    self.imported[alias.asname or alias.name] = module.split(".")[-1]


class Checker:
    def __init__(self, modules: dict[str, Module]) -> None:
        import slicer.util

        self.modules, self.util, self.report = modules, slicer.util, Report()

    def returns_of(self, module: Module, func: ast.expr, cls_name: str | None):
        """The return annotation of a package function / method the call names, if it can be found."""
        target = None
        if isinstance(func, ast.Name):
            target = module.functions.get(func.id)
            source = self.modules.get(module.imported.get(func.id, ""))
            if target is None and source is not None:
                target = source.functions.get(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id == "self" and cls_name:
                target = module.methods.get((cls_name, func.attr))
            elif func.value.id in module.aliases and module.aliases[func.value.id] in self.modules:
                target = self.modules[module.aliases[func.value.id]].functions.get(func.attr)
        return _annotation_type(target.returns) if target is not None else None

    def infer(self, node: ast.expr, env: dict, module: Module, cls_name: str | None):
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if getattr(node.value, "id", "") == "vtk" and node.attr.startswith("vtk"):
                return ("class", node.attr)
            if getattr(node.value, "id", "") == "slicer":
                return "vtkMRMLScene" if node.attr == "mrmlScene" else (("class", node.attr)
                                                                         if node.attr.startswith("vtk") else None)
            if getattr(node.value, "id", "") == "self" and cls_name:
                prop = module.methods.get((cls_name, node.attr))
                return _annotation_type(prop.returns) if prop is not None else env.get(f"self.{node.attr}")
            return None
        if isinstance(node, ast.Subscript):
            base = self.infer(node.value, env, module, cls_name)
            return base[1] if isinstance(base, tuple) and base[0] == "list" else None
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = self.infer(func.value, env, module, cls_name)
            if isinstance(owner, tuple) and owner[0] == "class":  # a static method
                return self._method_return(owner[1], func.attr)
            if func.attr in ("AddNewNodeByClass", "CreateNodeByClass", "GetFirstNodeByClass") and node.args \
                    and isinstance(node.args[0], ast.Constant):
                return node.args[0].value
            if func.attr == "GetNthNodeByClass" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                return node.args[1].value
            known = KNOWN_RETURNS.get((getattr(func.value, "id", ""), func.attr))
            if known:
                return known
            if isinstance(owner, str):
                return self._method_return(owner, func.attr)
        if isinstance(func, ast.Attribute) and getattr(func.value, "id", "") in ("slicer", "vtk") \
                and func.attr.startswith("vtk"):
            return func.attr  # a constructor
        return self.returns_of(module, func, cls_name)

    def _method_return(self, cls: str, method: str):
        signatures = vtk_signatures(vtk_class(cls), method) if vtk_class(cls) is not None else None
        if signatures is None or len(signatures[1]) != 1:
            return None
        ret = next(iter(signatures[1]))
        return ret if ret.startswith("vtk") else None

    def check_function(self, module: Module, func: ast.FunctionDef, cls_name: str | None) -> None:
        env: dict = {}
        for arg in func.args.args + func.args.kwonlyargs:
            env[arg.arg] = _annotation_type(arg.annotation)
        for _ in range(2):  # a second pass sees names assigned after their first use in a loop
            for node in ast.walk(func):
                self._bind(node, env, module, cls_name)
        for node in ast.walk(func):
            if isinstance(node, ast.Call):
                self.check_call(node, env, module, cls_name)

    def _bind(self, node, env, module, cls_name) -> None:
        def assign(target, value_type):
            if isinstance(target, ast.Name):
                previous = env.get(target.id, value_type)
                env[target.id] = value_type if previous == value_type else None  # conflicting: unknown
            elif isinstance(target, ast.Tuple) and isinstance(value_type, tuple) and value_type[0] == "tuple":
                for element, element_type in zip(target.elts, value_type[1]):
                    assign(element, element_type)
            elif isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "self":
                env[f"self.{target.attr}"] = value_type

        if isinstance(node, ast.Assign):
            for target in node.targets:
                assign(target, self.infer(node.value, env, module, cls_name))
        elif isinstance(node, (ast.For, ast.comprehension)):
            iterable = node.iter
            if isinstance(iterable, ast.Call) and getattr(iterable.func, "id", "") == "enumerate" and iterable.args \
                    and isinstance(node.target, ast.Tuple):
                kind = self.infer(iterable.args[0], env, module, cls_name)
                if isinstance(kind, tuple) and kind[0] == "list":
                    assign(node.target.elts[1], kind[1])
                return
            kind = self.infer(iterable, env, module, cls_name)
            if isinstance(kind, tuple) and kind[0] == "list":
                assign(node.target, kind[1])

    def check_call(self, node: ast.Call, env, module: Module, cls_name) -> None:
        func = node.func
        where = f"{module.path.relative_to(REPO) if module.path.is_relative_to(REPO) else module.path}:{node.lineno}"
        if not isinstance(func, ast.Attribute):
            return
        if isinstance(func.value, ast.Attribute) and getattr(func.value.value, "id", "") == "slicer" \
                and func.value.attr == "util":
            self.check_util(func.attr, node, where)
            return
        owner = self.infer(func.value, env, module, cls_name)
        static = isinstance(owner, tuple) and owner[0] == "class"
        cls_name_vtk = owner[1] if static else owner
        if not isinstance(cls_name_vtk, str):
            return
        cls = vtk_class(cls_name_vtk)
        if cls is None:
            self.report.errors.append(Finding(where, f"no class {cls_name_vtk} in slicer-core"))
            return
        if not hasattr(cls, func.attr):
            if cls_name_vtk in GENERIC:
                self.report.unknown += 1
            else:
                self.report.errors.append(Finding(where, f"{cls_name_vtk} has no method {func.attr}"))
            return
        self.report.checked.append((cls_name_vtk, func.attr))
        signatures = vtk_signatures(cls, func.attr)
        if signatures is None or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            return
        count = len(node.args)
        if not any(low <= count <= high for low, high in signatures[0]):
            self.report.errors.append(Finding(where, f"{cls_name_vtk}.{func.attr} takes {signatures[0]} arguments "
                                                     f"(required, total), called with {count}"))

    def check_class_attributes(self, module: Module) -> None:
        """Constants and events named on a class (slicer.vtkSegmentation.SegmentAdded, vtk.vtkCommand.ModifiedEvent,
        slicer.mrmlScene.StartCloseEvent) exist on it."""
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and getattr(node.value.value, "id", "") in ("slicer", "vtk")):
                continue
            owner = "vtkMRMLScene" if node.value.attr == "mrmlScene" else node.value.attr
            cls = vtk_class(owner) if owner.startswith("vtk") else None
            if cls is None:
                continue
            if hasattr(cls, node.attr):
                self.report.checked.append((owner, node.attr))
            else:
                self.report.errors.append(Finding(f"{module.path.name}:{node.lineno}", f"{owner} has no {node.attr}"))

    def check_util(self, name: str, node: ast.Call, where: str) -> None:
        target = getattr(self.util, name, None)
        if target is None:
            self.report.errors.append(Finding(where, f"slicer.util has no {name}"))
            return
        self.report.util.append(name)
        star = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        args = [None] * len([a for a in node.args if not isinstance(a, ast.Starred)])
        kwargs = {k.arg: None for k in node.keywords if k.arg is not None}
        try:
            signature = inspect.signature(target)
            (signature.bind_partial if star else signature.bind)(*args, **kwargs)
        except TypeError as exc:
            self.report.errors.append(Finding(where, f"slicer.util.{name}{signature}: {exc}"))


def check_sources(files: dict[str, Path]) -> Report:
    """files: {module name: path} of one package (module name = what `from . import <name>` says)."""
    modules = {name: Module(path, name) for name, path in files.items()}
    checker = Checker(modules)
    for module in modules.values():
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef):
                checker.check_function(module, node, None)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        checker.check_function(module, item, node.name)
        checker.check_class_attributes(module)
        for node in ast.walk(module.tree):  # `from slicer.util import X` names exist too
            if isinstance(node, ast.ImportFrom) and node.module == "slicer.util":
                for alias in node.names:
                    if not hasattr(checker.util, alias.name):
                        checker.report.errors.append(Finding(str(module.path), f"slicer.util has no {alias.name}"))
    return checker.report


def _module_files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(MODULE.rglob("*.py")) if "__pycache__" not in path.parts}


def test_every_slicer_util_and_mrml_call_of_the_module_matches_slicer():
    report = check_sources(_module_files())
    assert not report.errors, "\n".join(f"{f.where}: {f.text}" for f in report.errors)
    classes = {cls for cls, _ in report.checked}
    assert {"vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode", "vtkMRMLSegmentationNode",
            "vtkMRMLScalarVolumeNode", "vtkMRMLScriptedModuleNode", "vtkMRMLScene", "vtkSegmentation",
            "vtkSlicerSegmentationsModuleLogic"} <= classes
    assert len(report.checked) >= 200, f"only {len(report.checked)} MRML calls resolved"
    assert report.unknown <= len(report.checked) // 10  # calls on a generic vtkMRMLNode the check could not place
    assert {"loadUI", "childWidgetVariables", "tryWithErrorDisplay", "confirmYesNoDisplay", "confirmOkCancelDisplay",
            "pip_install", "startupEnvironment", "NodeModify", "WaitCursor", "restart"} <= set(report.util)


def test_the_contract_check_catches_a_wrong_call(tmp_path):
    """The same check on calls that do not exist or do not bind: every one is reported."""
    source = tmp_path / "wrong.py"
    source.write_text(
        "import slicer\n"
        "def f(browser: 'slicer.vtkMRMLSequenceBrowserNode', scene: 'slicer.vtkMRMLScene') -> None:\n"
        "    sequence = browser.GetMasterSequenceNode()\n"
        "    sequence.GetNthIndexValue(1, 2, 3)\n"            # too many arguments
        "    browser.GetMasterSequenceNodeX()\n"              # no such method
        "    node = scene.AddNewNodeByClass('vtkMRMLSegmentationNode')\n"
        "    node.GetSegmentation().AddEmptySegmentX('a')\n"  # through GetSegmentation's documented return type
        "    slicer.util.loadUI('a', 'b', 'c')\n"             # does not bind
        "    slicer.util.noSuchHelper()\n"
        "    browser.SetMissingItemMode(sequence, slicer.vtkMRMLSequenceBrowserNode.MissingItemSetToNothing)\n"
        "    node.GetSegmentation().GetNumberOfSegments()\n")  # right: not reported
    report = check_sources({"wrong": source})
    texts = sorted(f.text.split(":")[0] if "slicer.util." in f.text else f.text for f in report.errors)
    assert len(report.errors) == 6, texts
    assert any("MissingItemSetToNothing" in t for t in texts)
    assert any("GetNthIndexValue" in t for t in texts) and any("GetMasterSequenceNodeX" in t for t in texts)
    assert any("vtkSegmentation has no method AddEmptySegmentX" in t for t in texts)
    assert any("loadUI" in t for t in texts) and any("noSuchHelper" in t for t in texts)
    assert ("vtkSegmentation", "GetNumberOfSegments") in report.checked
