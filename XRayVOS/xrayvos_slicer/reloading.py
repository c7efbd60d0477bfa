"""Developer Reload: Slicer's reloadScriptedModule re-executes XRayVOS.py only, and its imports would
find the module's packages, unchanged, in sys.modules. Forgetting them first makes Reload pick up edits
to the whole module. Pure Python (tested without Slicer).
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, MutableMapping

# The module's own packages; XRayVOSLib too: the GUI process imports its settings, runtime and readers.
OWN_PACKAGES = ("xrayvos_slicer", "xrayvos_gui", "XRayVOSLib")


def own_modules(names: Iterable[str], packages: Iterable[str] = OWN_PACKAGES) -> list[str]:
    """The names of `names` that are one of `packages` or inside one."""
    roots = set(packages)
    return sorted(name for name in names if name.split(".")[0] in roots)


def forget_own_modules(modules: MutableMapping[str, Any] | None = None) -> list[str]:
    """Remove the module's packages from `modules` (default sys.modules); returns the names removed."""
    modules = sys.modules if modules is None else modules
    names = own_modules(list(modules))
    for name in names:
        modules.pop(name, None)
    return names
