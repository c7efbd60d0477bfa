"""Developer Reload: the module's packages leave sys.modules, so re-executing XRayVOS.py imports their edits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from xrayvos_slicer.reloading import forget_own_modules, own_modules

MODULE = Path(__file__).resolve().parents[2] / "XRayVOS"


def test_own_modules_are_the_three_packages_and_nothing_else():
    names = ["xrayvos_slicer", "xrayvos_slicer.logic", "xrayvos_gui.self_test", "XRayVOSLib.settings", "XRayVOS",
             "xrayvos_slicerish", "numpy", "slicer.util", "qt"]
    assert own_modules(names) == ["XRayVOSLib.settings", "xrayvos_gui.self_test", "xrayvos_slicer",
                                  "xrayvos_slicer.logic"]
    modules = dict.fromkeys(names)
    assert forget_own_modules(modules) == own_modules(names)
    assert sorted(modules) == ["XRayVOS", "numpy", "qt", "slicer.util", "xrayvos_slicerish"]


def test_an_edit_is_imported_after_forgetting(tmp_path):
    """What onReload does before Slicer re-executes the module file, on a copy of the package edited in between."""
    copy = tmp_path / "xrayvos_slicer"
    shutil.copytree(MODULE / "xrayvos_slicer", copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys, pathlib\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import xrayvos_slicer.reloading as r\n"
        "before = r.OWN_PACKAGES\n"
        "p = pathlib.Path(r.__file__)\n"
        "p.write_text(p.read_text().replace('OWN_PACKAGES = (', 'OWN_PACKAGES = (\"edited\", '))\n"
        "import importlib; importlib.invalidate_caches()\n"
        "import xrayvos_slicer.reloading as same\n"
        "assert same.OWN_PACKAGES == before, 'a plain re-import must still see the old module'\n"
        "gone = r.forget_own_modules()\n"
        "import xrayvos_slicer.reloading as fresh\n"
        "print(fresh.OWN_PACKAGES[0], 'xrayvos_slicer.reloading' in gone)\n")
    done = subprocess.run([sys.executable, "-B", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["edited", "True"]
