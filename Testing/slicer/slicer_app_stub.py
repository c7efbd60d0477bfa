"""A stand-in for the parts of the Slicer application that the slicer-core wheel does not ship, so that the
module file can be imported in a plain Python process (test_slicer_startup.py runs this in a subprocess).

Real: every MRML class and Slicer's own slicer/util.py (slicer-core). Stubbed, with only the names the
module imports: qt and ctk (no Qt here), slicer.app, and three of Slicer's application-side Python
modules that slicer-core leaves out (slicer.i18n, slicer.ScriptedLoadableModule,
slicer.parameterNodeWrapper). None of them imports anything, so what the module's own start-up imports
pull in is exactly what the test sees. `block()` makes the packages Slicer does not ship unimportable.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOT_SHIPPED_BY_SLICER = ("cv2", "torch", "torchvision", "monai", "safetensors", "pydicom", "pylibjpeg", "av",
                         "tqdm", "skimage", "highdicom", "dask")


def block(names=NOT_SHIPPED_BY_SLICER) -> None:
    for name in names:
        sys.modules[name] = None  # `import name` now raises ImportError


class FakeTimer:
    """qt.QTimer: records its parent and every start / stop."""

    made: list["FakeTimer"] = []

    def __init__(self, parent=None) -> None:
        self.parent, self.active, self.events = parent, False, []
        self.timeout = FakeSignal()
        FakeTimer.made.append(self)

    def start(self, *args) -> None:
        self.active = True
        self.events.append("start")

    def stop(self) -> None:
        self.active = False
        self.events.append("stop")

    def setInterval(self, ms) -> None:
        pass

    def setSingleShot(self, single) -> None:
        pass

    queued: list = []

    @staticmethod
    def singleShot(ms, callback) -> None:
        FakeTimer.queued.append(callback)


class FakeSignal:
    def __init__(self) -> None:
        self.slots = []

    def connect(self, slot) -> None:
        self.slots.append(slot)


def install() -> None:
    """Put the stand-ins in sys.modules and the module's folders on sys.path (as Slicer does)."""
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    qt.Qt = types.SimpleNamespace(UserRole=256, ToolTipRole=3, Checked=2, Unchecked=0, ItemIsUserCheckable=16)
    sys.modules["qt"] = qt
    sys.modules["ctk"] = types.ModuleType("ctk")
    import slicer  # slicer-core: real MRML and slicer.util

    slicer.app = types.SimpleNamespace(testingEnabled=lambda: True, slicerHome=str(REPO),
                                       slicerUserSettingsFilePath=str(REPO / "settings.ini"))
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest"):
        setattr(slm, name, type(name, (), {"__init__": lambda self, *args, **kwargs: None}))
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.WithinRange = lambda *args: ("validator", args)
    for module in (i18n, slm, wrapper):
        sys.modules[module.__name__] = module
        setattr(slicer, module.__name__.split(".")[1], module)
    for path in (REPO, REPO / "XRayVOS"):
        sys.path.insert(0, str(path))
