"""The module's logic in the Slicer application, and its parameter node (needs real Slicer).

XRayVOSLogic is xrayvos_slicer.logic.XRayVOSLogic (the MRML work, tested with slicer-core) plus what only
the application has: the PythonSlicer interpreter, the launcher's startup environment, first-use installs,
and the module's parameter node. The widget (XRayVOS.py) and the self-test (self_test.py) both use it, so
neither imports the other.
"""

import enum
from typing import Annotated, Union

import slicer
from slicer import vtkMRMLSegmentationNode, vtkMRMLSequenceBrowserNode, vtkMRMLSequenceNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from XRayVOSLib.runtime import python_executable
from XRayVOSLib.settings import RunSettings
from xrayvos_slicer import logic as corelogic
from xrayvos_slicer.finetune_logic import FinetuneLogic

DEFAULTS = RunSettings()  # the shipped pipeline's values; a model's own come from RunSettings.from_model
WINDOW_CHOICES = list(range(1, 64, 2))  # RunSettings.validate takes odd windows only: offer no other


class Decision(enum.Enum):
    """RunSettings.decision, shown in the decision combo box by label()."""

    AREA_PRIOR = "area-prior"
    THRESHOLD = "threshold"

    def label(self) -> str:
        return _("Area prior (keep each object's painted area)") if self is Decision.AREA_PRIOR else _(
            "Fixed threshold")


@parameterNodeWrapper
class XRayVOSParameterNode:
    inputCine: Union[vtkMRMLSequenceBrowserNode, vtkMRMLSequenceNode, None]
    supportSegmentation: vtkMRMLSegmentationNode
    method: Annotated[str, Choice(["local", "global", "flow"])] = DEFAULTS.method
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = DEFAULTS.device
    window: Annotated[int, Choice(WINDOW_CHOICES)] = DEFAULTS.window
    memoryEvery: Annotated[int, WithinRange(1, 100)] = DEFAULTS.memory_every
    decision: Decision = Decision(DEFAULTS.decision)  # set from the chosen model (applyModelDefaults)
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = DEFAULTS.threshold  # used with Decision.THRESHOLD only
    modelPath: str = ""  # empty: the model bundled with the extension


class XRayVOSLogic(ScriptedLoadableModuleLogic, corelogic.XRayVOSLogic):
    """The MRML logic (xrayvos_slicer.logic) plus what only real Slicer has: dependency install, launcher env."""

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        corelogic.XRayVOSLogic.__init__(self, scene)
        self.python = python_executable(slicer.app.slicerHome)

    def getParameterNode(self) -> XRayVOSParameterNode:
        raw = ScriptedLoadableModuleLogic.getParameterNode(self)
        fresh = not raw.HasParameter("decision")
        node = XRayVOSParameterNode(raw)
        if fresh:  # a new scene: the bundled model's decision and threshold, not the generic defaults
            self.applyModelDefaults(node)
        return node

    def applyModelDefaults(self, node: XRayVOSParameterNode) -> None:
        """Set the decision and the threshold to what the selected model carries (a model is chosen)."""
        try:
            carried = RunSettings.from_model(node.modelPath or None)
            node.decision, node.threshold = Decision(carried.decision), min(max(carried.threshold, 0.01), 0.99)
        except Exception:  # a missing or foreign file: Propagate reports it; keep the controls as they are
            pass

    def settingsFrom(self, node: XRayVOSParameterNode) -> RunSettings:
        """The run settings of the widget's choices over the selected model's (InputError names a bad one)."""
        self.ensure_dependencies(node.method)  # safetensors first: the model's settings are read from its header
        return self.run_settings(node.modelPath or None, method=node.method, device=node.device, window=node.window,
                                 memory_every=node.memoryEvery, decision=node.decision.value,
                                 threshold=round(float(node.threshold), 4))

    def ensure_dependencies(self, method: str) -> None:
        from xrayvos_slicer import dependencies

        dependencies.ensure_for(method, confirm=not slicer.app.testingEnabled())

    def configure_finetune(self, finetune: FinetuneLogic) -> None:
        """Same interpreter, environment and first-use installs for fine-tuning as for propagation."""
        from xrayvos_slicer import dependencies

        finetune.python, finetune.worker_base_environment = self.python, self.worker_base_environment
        finetune.ensure_dependencies = lambda: dependencies.ensure_for_training(
            confirm=not slicer.app.testingEnabled())

    def worker_base_environment(self):
        try:
            return slicer.util.startupEnvironment()  # what PythonSlicer expects (as launchConsoleProcess does)
        except Exception:
            return None


__all__ = ["Decision", "XRayVOSLogic", "XRayVOSParameterNode"]
