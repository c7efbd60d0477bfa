"""The extension's files without Slicer: byte-compilation, .ui <-> widget <-> parameter node, CMake, catalog entry."""

from __future__ import annotations

import ast
import json
import py_compile
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "XRayVOS"
MODULE_SCRIPT = MODULE / "XRayVOS.py"
LOGIC_FILES = sorted((MODULE / "xrayvos_slicer").glob("*.py"))
GUI_FILES = sorted((MODULE / "xrayvos_gui").glob("*.py"))  # Qt: need real Slicer
PYTHON_FILES = [MODULE_SCRIPT, *LOGIC_FILES, *GUI_FILES, REPO / "XRayVOSLib" / "worker.py"]


@pytest.mark.parametrize("path", PYTHON_FILES, ids=lambda p: p.name)
def test_byte_compiles_with_conservative_syntax(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)
    # Slicer 5.10 runs Python 3.12; keep to syntax Python 3.10 already parses.
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


def _python312() -> str | None:
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    candidates = [shutil.which("python3.12"), *map(str, pyenv)]
    for found in filter(None, candidates):
        probe = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return found
    return None


def test_byte_compiles_with_python_312(tmp_path):
    """Slicer >= 5.10 embeds Python 3.12: compile the module and its logic with a real 3.12 where there is one."""
    python = _python312()
    if python is None:
        pytest.skip("no python3.12 interpreter on this machine")
    files = [*PYTHON_FILES, *sorted((REPO / "XRayVOSLib").rglob("*.py"))]
    code = "import py_compile, sys\nfor f in sys.argv[1:]: py_compile.compile(f, cfile=f + '.312c', doraise=True)"
    copies = []
    for i, f in enumerate(files):
        copy = tmp_path / f"{i}_{f.name}"
        copy.write_bytes(f.read_bytes())
        copies.append(str(copy))
    result = subprocess.run([python, "-c", code, *copies], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_logic_package_needs_no_qt_nor_slicer_app():
    for path in LOGIC_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"qt", "ctk", "PythonQt"}, path.name
        uses_app = any(isinstance(n, ast.Attribute) and n.attr == "app" and getattr(n.value, "id", "") == "slicer"
                       for n in ast.walk(tree))
        assert not uses_app or path.name == "dependencies.py", f"{path.name} uses slicer.app"


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def test_module_widget_ui_and_parameter_node_agree():
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    gui_trees = [ast.parse(path.read_text(encoding="utf-8")) for path in GUI_FILES]
    classes = _classes(tree)
    for gui_tree in gui_trees:
        classes.update(_classes(gui_tree))
    bases = {name: [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases] for name, node in classes.items()}
    assert "ScriptedLoadableModule" in bases["XRayVOS"]
    assert "ScriptedLoadableModuleWidget" in bases["XRayVOSWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["XRayVOSLogic"]
    assert "ScriptedLoadableModuleTest" in bases["XRayVOSTest"]
    wrapper = classes["XRayVOSParameterNode"]
    assert any(getattr(d, "id", "") == "parameterNodeWrapper" for d in wrapper.decorator_list)
    fields = {node.target.id for node in wrapper.body if isinstance(node, ast.AnnAssign)}

    ui = ET.parse(MODULE / "Resources" / "UI" / "XRayVOS.ui")
    widgets = {w.get("name") for w in ui.iter("widget")}
    bound = {prop.find("string").text for prop in ui.iter("property") if prop.get("name") == "SlicerParameterName"}
    assert bound <= fields, f"ui binds unknown parameters {bound - fields}"
    assert fields - bound == {"modelPath"}  # bound by hand (ctkPathLineEdit <-> str)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used <= widgets, f"XRayVOS.py uses widgets missing from the .ui: {used - widgets}"
    used_by_gui = {node.attr for t in gui_trees for node in ast.walk(t) if isinstance(node, ast.Attribute)
                   and isinstance(node.value, (ast.Attribute, ast.Name))
                   and getattr(node.value, "attr", getattr(node.value, "id", "")) == "ui"}
    assert used_by_gui <= widgets, f"xrayvos_gui uses widgets missing from the .ui: {used_by_gui - widgets}"
    finetune_widgets = {w for w in widgets
                        if w.startswith("finetune") and not w.endswith(("Label", "CollapsibleButton"))}
    assert finetune_widgets and finetune_widgets <= used_by_gui | used, "unused Fine-tune widgets in the .ui"


def _parameter_annotations() -> dict[str, ast.expr]:
    tree = ast.parse((MODULE / "xrayvos_gui" / "module_logic.py").read_text(encoding="utf-8"))
    wrapper = _classes(tree)["XRayVOSParameterNode"]
    return {node.target.id: node.annotation for node in wrapper.body if isinstance(node, ast.AnnAssign)}


def _choices(annotation: ast.expr) -> list:
    calls = [n for n in ast.walk(annotation) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Choice"]
    return ast.literal_eval(calls[0].args[0])


def test_parameter_node_and_ui_speak_run_settings():
    """The controls can only produce valid RunSettings: method, device, decision, threshold range."""
    from XRayVOSLib.settings import DECISIONS, METHODS, RunSettings

    annotations = _parameter_annotations()
    assert set(_choices(annotations["method"])) <= set(METHODS)
    for device in _choices(annotations["device"]):
        RunSettings(device=device)
    tree = ast.parse((MODULE / "xrayvos_gui" / "module_logic.py").read_text(encoding="utf-8"))
    decision = _classes(tree)["Decision"]
    values = [ast.literal_eval(n.value) for n in decision.body if isinstance(n, ast.Assign)]
    assert values == list(DECISIONS)
    assert getattr(annotations["decision"], "id", "") == "Decision"
    ranges = [n for n in ast.walk(annotations["threshold"]) if isinstance(n, ast.Call)
              and getattr(n.func, "id", "") == "WithinRange"]
    low, high = (ast.literal_eval(a) for a in ranges[0].args)
    RunSettings(decision="threshold", threshold=low)
    RunSettings(decision="threshold", threshold=high)

    ui = ET.parse(MODULE / "Resources" / "UI" / "XRayVOS.ui")
    widgets = {w.get("name"): w for w in ui.iter("widget")}
    combo, spin = widgets["decisionComboBox"], widgets["thresholdSpinBox"]
    assert combo.get("class") == "QComboBox" and spin.get("class") == "QDoubleSpinBox"
    bound = {w.get("name"): w.find("property[@name='SlicerParameterName']/string").text for w in (combo, spin)}
    assert bound == {"decisionComboBox": "decision", "thresholdSpinBox": "threshold"}
    spin_range = [float(spin.find(f"property[@name='{k}']/double").text) for k in ("minimum", "maximum")]
    assert spin_range == [low, high]  # the spin box offers what the parameter node accepts
    assert not [name for name in widgets if "flip" in name.lower()]
    # The threshold box is live only with the fixed-threshold decision (no hidden switch on its value).
    source = MODULE_SCRIPT.read_text(encoding="utf-8")
    assert "self.ui.thresholdSpinBox.enabled = network and p.decision == Decision.THRESHOLD" in source


def _module_imports(path: Path, name: str, package: bool) -> set[str]:
    """Every module `path` imports (function-level imports too), relative imports resolved."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = name.split(".") if package else name.split(".")[:-1]
            base = ".".join(parts[:len(parts) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            out |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return out


def test_no_module_of_the_extension_imports_one_that_imports_it_back():
    """Import graph of XRayVOS/ (as Slicer puts it on sys.path): no cycle, through function-level imports too."""
    files = {}
    for path in [MODULE_SCRIPT, *LOGIC_FILES, *GUI_FILES]:
        parts = list(path.relative_to(MODULE).with_suffix("").parts)
        package = parts[-1] == "__init__"
        files[".".join(parts[:-1] if package else parts)] = (path, package)
    graph = {}
    for name, (path, package) in files.items():
        imported = _module_imports(path, name, package)
        prefixes = {".".join(m.split(".")[:i]) for m in imported for i in range(1, m.count(".") + 2)}
        graph[name] = {m for m in prefixes if m in files and m != name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen))
                   for nxt in graph[start])

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert not cycles, f"import cycles through {cycles}"
    assert "XRayVOS" not in set().union(*graph.values()), "only Slicer imports the module file"


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE / "Resources" / "Icons" / "XRayVOS.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_extension_catalog_entry_follows_schema_v1_0_2():
    entry = json.loads((REPO / "XRayVOS.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json")
    assert entry["category"] == "Segmentation" and entry["build_dependencies"] == ["PyTorch"]
    assert entry["build_subdirectory"] == "." and isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    assert entry["scm_url"] and entry["scm_revision"]


STUB_SLICER_CONFIG = r'''
# Stub of Slicer's config: records what the extension's CMake files ask for, and checks the files exist.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(BUILD_TESTING ON)
enable_testing()
function(_stub_record kind dir)
  foreach(f ${ARGN})
    if(NOT IS_ABSOLUTE "${f}")
      set(f "${dir}/${f}")
    endif()
    if(NOT EXISTS "${f}")
      message(FATAL_ERROR "${kind}: missing file ${f}")
    endif()
    file(APPEND ${CMAKE_BINARY_DIR}/stub_${kind}.txt "${f}\n")
  endforeach()
endfunction()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(_m "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  _stub_record(module ${CMAKE_CURRENT_SOURCE_DIR} ${_m_SCRIPTS} ${_m_RESOURCES})
endmacro()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(_c "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  _stub_record(library ${_c_SOURCE_DIR} ${_c_SCRIPTS} ${_c_RESOURCES})
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(_t "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  _stub_record(unittest ${CMAKE_CURRENT_SOURCE_DIR} ${_t_SCRIPT})
  get_filename_component(_name ${_t_SCRIPT} NAME_WE)
  add_test(NAME py_${_name} COMMAND ${CMAKE_COMMAND} -E true)
endmacro()
'''


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_files_configure_against_a_stub_slicer(tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_SLICER_CONFIG)
    (stub / "empty.cmake").write_text("")
    build = tmp_path / "build"
    done = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stub}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    module_files = {Path(p).relative_to(MODULE).as_posix() for p in (build / "stub_module.txt").read_text().split()}
    expected = {"XRayVOS.py", "Resources/UI/XRayVOS.ui", "Resources/Icons/XRayVOS.png"}
    expected |= {p.relative_to(MODULE).as_posix() for p in [*LOGIC_FILES, *GUI_FILES]}
    assert module_files == expected
    library = {Path(p).relative_to(REPO).as_posix() for p in (build / "stub_library.txt").read_text().split()}
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "XRayVOSLib").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert library == on_disk and "XRayVOSLib/worker.py" in library
    assert Path((build / "stub_unittest.txt").read_text().strip()).resolve() == MODULE_SCRIPT
    tests = subprocess.run(["ctest", "-N"], cwd=build, capture_output=True, text=True, timeout=60).stdout
    assert "py_XRayVOS" in tests
    model = REPO / "models" / "xrayvos_default.safetensors"
    packaged = build / "lib/Slicer-5.10/qt-scripted-modules/XRayVOSLib/models" / model.name
    assert packaged.exists() == model.exists()


def test_dependency_check_sees_what_is_installed():
    import sys

    sys.path.insert(0, str(MODULE))
    from xrayvos_slicer import dependencies

    assert dependencies.missing_requirements(["numpy>=1.0", "numpy<1.0", "surely-not-a-package-xrayvos>=1"]) == [
        "numpy<1.0", "surely-not-a-package-xrayvos>=1"]
    assert "safetensors>=0.4" not in dependencies.requirements_for("flow")
    assert "safetensors>=0.4" in dependencies.requirements_for("local")
    assert "av>=11" in dependencies.requirements_for("flow", read_files=True, video=True)


def _cmake_set(name: str) -> str:
    """The value of set(NAME "...") in the top-level CMakeLists.txt, read as the Extensions Index checker does."""
    import re

    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    found = re.findall(rf'set\s*\({name}\s*"([^"]+)"\s*\)', text, re.IGNORECASE | re.MULTILINE)
    assert found, f"no {name} in CMakeLists.txt"
    return found[0]


def test_extension_index_requirements_in_the_repository():
    """What the Extensions Index checker downloads or reads: LICENSE at the root, the icon and screenshot URLs
    (raw files of this repository, committed), and a CMake minimum no lower than SlicerConfig.cmake's."""
    import re
    import tomllib

    from PIL import Image

    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in licence
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    homepage = _cmake_set("EXTENSION_HOMEPAGE")
    owner_repo = re.match(r"https://github\.com/([^/]+/[^/#]+)", homepage).group(1)
    raw = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    icon, *screenshots = [_cmake_set("EXTENSION_ICONURL"), *_cmake_set("EXTENSION_SCREENSHOTURLS").split()]
    assert screenshots and all(url.startswith(raw) for url in [icon, *screenshots])
    for url in [icon, *screenshots]:
        with Image.open(REPO / url[len(raw):]) as image:
            assert image.format == "PNG"
    with Image.open(REPO / screenshots[0][len(raw):]) as shot:
        assert shot.size[0] >= 800 and shot.size[1] >= 200
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    minimum = re.search(r"cmake_minimum_required\(VERSION (\d+(?:\.\d+)*)", cmake).group(1)
    assert tuple(map(int, minimum.split("."))) >= (3, 20, 6)  # Slicer 5.10 / 5.12 SlicerConfig.cmake
    assert f'DOCUMENTATION_URL = "{homepage}"' in MODULE_SCRIPT.read_text(encoding="utf-8")


def test_the_window_control_offers_only_odd_windows():
    from XRayVOSLib.errors import InputError
    from XRayVOSLib.settings import RunSettings

    tree = ast.parse((MODULE / "xrayvos_gui" / "module_logic.py").read_text(encoding="utf-8"))
    value = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "WINDOW_CHOICES")
    choices = eval(compile(ast.Expression(value), "WINDOW_CHOICES", "eval"), {"list": list, "range": range})
    assert choices[0] == 1 and choices[-1] == 63 and all(k % 2 for k in choices)
    for window in choices:
        RunSettings(window=window)
    with pytest.raises(InputError):
        RunSettings(window=choices[0] + 1)
    assert RunSettings().window in choices
    annotation = ast.unparse(_parameter_annotations()["window"])
    assert annotation == "Annotated[int, Choice(WINDOW_CHOICES)]"
    ui = ET.parse(MODULE / "Resources" / "UI" / "XRayVOS.ui")
    combo = next(w for w in ui.iter("widget") if w.get("name") == "windowComboBox")
    assert combo.get("class") == "QComboBox"  # the parameter node fills it with the choices
