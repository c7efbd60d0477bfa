"""XRayVOS: segment every frame of an X-ray angiography cine from one or two painted frames.

The widget is thin: it binds the .ui to the parameter node (xrayvos_gui.module_logic.XRayVOSParameterNode)
and drives xrayvos_gui.module_logic.XRayVOSLogic, which builds the run's RunSettings, does the MRML work
(xrayvos_slicer.logic) and runs the propagation in a background process that a QTimer polls.

From the Python console:

    import XRayVOS
    from XRayVOSLib.settings import RunSettings
    logic = XRayVOS.XRayVOSLogic()
    result = logic.propagate(browser, supportSegmentation)                        # the bundled model's settings
    result = logic.propagate(browser, supportSegmentation,
                             RunSettings.from_model(None, decision="threshold", threshold=0.3))
"""

import logging
import os
from typing import Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from XRayVOSLib.settings import NETWORK_METHODS
from xrayvos_gui.module_logic import Decision, XRayVOSLogic, XRayVOSParameterNode
from xrayvos_gui.self_test import XRayVOSTest
from xrayvos_slicer import logic as corelogic
from xrayvos_slicer import sequences
from xrayvos_slicer.finetune_logic import FinetuneLogic

__all__ = ["XRayVOS", "XRayVOSLogic", "XRayVOSParameterNode", "XRayVOSTest", "XRayVOSWidget"]  # Slicer runs <name>Test

POLL_MS = 200
DOCUMENTATION_URL = "https://github.com/xrayvos/XRayVOS#3d-slicer-extension"  # = EXTENSION_HOMEPAGE


class XRayVOS(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("XRayVOS")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Sequences", "Segmentations"]
        self.parent.contributors = ["XRayVOS developers"]
        self.parent.helpText = _(
            "Segment every frame of an X-ray angiography cine from one or two frames painted in the Segment Editor. "
            "Choose the cine, paint the support segmentation on a frame or two, then Propagate. The result is a "
            "segmentation sequence synchronised with the cine; Export to DICOM writes it as a DICOM SEG of a DICOM "
            "cine, and Load DICOM SEG reads one back.") + self.getDefaultModuleDocumentationLink()
        self.parent.acknowledgementText = _(
            "Local-matching memory network after Xi, Ma and Zhuang, Neural Networks 2026.")

    def getDefaultModuleDocumentationLink(self, docPage=None) -> str:
        """Slicer's own points into Slicer's documentation, which has no page for an extension's module."""
        url = docPage or DOCUMENTATION_URL
        return "<p>" + _("For more information, see the {url_start}online documentation{url_end}.").format(
            url_start=f'<a href="{url}">', url_end="</a>") + "</p>"


class XRayVOSWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._closed = False  # cleanup() ran: no slot may touch the GUI or restart a timer

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XRayVOS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = XRayVOSLogic()

        from xrayvos_gui.dicom_section import DicomSection  # Export to DICOM / Load DICOM SEG
        from xrayvos_gui.finetune_section import FinetuneSection  # Qt part of the Fine-tune section
        from xrayvos_gui.support_section import SupportSection

        self.pollTimer = qt.QTimer(uiWidget)  # parented; cleanup() stops every timer
        self.pollTimer.setInterval(POLL_MS)
        self.pollTimer.timeout.connect(self.onPoll)
        self.cineFilterTimer = qt.QTimer(uiWidget)  # debounce: loading a scene adds many nodes
        self.cineFilterTimer.setSingleShot(True)
        self.cineFilterTimer.setInterval(0)
        self.cineFilterTimer.timeout.connect(self.updateCineSelector)
        self.supports = SupportSection(self.ui, self.logic, uiWidget, self.setStatus, lambda: self._run is not None)
        self.dicom = DicomSection(self.ui, self.logic, uiWidget, self.setStatus, lambda: self._parameterNode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.loadCineButton.clicked.connect(self.onLoadCine)
        self.ui.editSupportButton.clicked.connect(self.onEditSupport)
        self.ui.propagateButton.clicked.connect(self.onPropagateOrCancel)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self.onModelPathChanged)
        self.ui.modelComboBox.connect("activated(int)", self.onModelChosen)  # Qt 5 also has activated(QString)
        self.ui.markReviewedButton.clicked.connect(lambda: self.onMarkReviewed(current=True))
        self.ui.markAllReviewedButton.clicked.connect(lambda: self.onMarkReviewed(current=False))

        settingsDir = os.path.dirname(slicer.app.slicerUserSettingsFilePath)  # per user, survives upgrades
        self.finetuneLogic = FinetuneLogic(models_dir=os.environ.get("XRAYVOS_MODELS_DIR")
                                           or os.path.join(settingsDir, "XRayVOS", "models"))
        self.logic.configure_finetune(self.finetuneLogic)
        self.finetune = FinetuneSection(self.ui, self.finetuneLogic, self.refreshModels, uiWidget)
        self.refreshModels()
        self.updateCineSelector()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """On exit and before Reload: stop every timer first, so nothing below can restart one."""
        self._closed = True
        for timer in (self.pollTimer, self.cineFilterTimer):
            timer.stop()
        self.supports.close()
        self.finetune.close()
        if self._run is not None:
            self.logic.cancel(self._run)
            self._run = None
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self.removeObservers()

    def onReload(self) -> None:
        """Slicer re-executes this file only: forget the module's packages so their edits are picked up too."""
        from xrayvos_slicer.reloading import forget_own_modules

        forget_own_modules()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:  # keep observing nodes while a run is in flight; only the GUI binding goes
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.finetune.refreshCases()

    def onNodeAdded(self, caller, event) -> None:
        if not self._closed:
            self.cineFilterTimer.start()

    def updateCineSelector(self) -> None:
        """Supports, results and other non-image sequences are no cine: keep them out of the cine selector."""
        if not self._closed:
            self.ui.inputCineSelector.sortFilterProxyModel().hiddenNodeIDs = sequences.non_cine_sequence_ids(
                slicer.mrmlScene)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputCine:
            browser = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
            if browser:
                self._parameterNode.inputCine = browser

    def setParameterNode(self, inputParameterNode: Optional[XRayVOSParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    # -- GUI state -------------------------------------------------------------------------------------------
    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        if self._closed:
            return
        p = self._parameterNode
        running = self._run is not None
        ready = bool(p and p.inputCine and p.supportSegmentation)
        self.ui.propagateButton.text = _("Cancel") if running else _("Propagate")
        self.ui.propagateButton.enabled = running or ready
        self.ui.propagateButton.toolTip = (_("Stop the background propagation; nothing is written") if running else
                                           _("Propagate the support frames to every frame of the cine") if ready else
                                           _("Select a cine and a support segmentation first"))
        for widget in (self.ui.inputsCollapsibleButton, self.ui.settingsCollapsibleButton):
            widget.enabled = not running
        if p and self.ui.modelPathLineEdit.currentPath != p.modelPath:
            self.ui.modelPathLineEdit.currentPath = p.modelPath
        if p and self.ui.modelComboBox.findData(p.modelPath) >= 0:
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(p.modelPath))
        self.ui.markReviewedButton.enabled = self.ui.markAllReviewedButton.enabled = bool(p and p.supportSegmentation)
        network = bool(p) and p.method in NETWORK_METHODS  # the baselines have no model, window nor decision
        for widget in (self.ui.windowComboBox, self.ui.memoryEverySpinBox, self.ui.modelPathLineEdit,
                       self.ui.deviceComboBox, self.ui.modelComboBox, self.ui.decisionComboBox):
            widget.enabled = network
        self.ui.thresholdSpinBox.enabled = network and p.decision == Decision.THRESHOLD
        self.supports.follow(p)
        self.dicom.update(p, running)

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    # -- actions ---------------------------------------------------------------------------------------------
    def onLoadCine(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Load X-ray cine"), "",
                                              _("Cines (*.dcm *.nrrd *.nii *.nii.gz *.npy *.mp4 *.avi);;All files (*)"))
        if not path:
            return
        from xrayvos_slicer import dependencies

        with slicer.util.tryWithErrorDisplay(_("Failed to load the cine."), waitCursor=True):
            video = path.lower().endswith((".mp4", ".avi", ".mov", ".mkv"))
            try:
                dependencies.ensure_for("flow", confirm=True, read_files=True, video=video)
            except dependencies.RestartNeeded as exc:  # e.g. Slicer 5.10 imported pydicom 2.4.4 at start-up
                if slicer.util.confirmYesNoDisplay(str(exc) + "\n\n" + _("Restart Slicer now?")):
                    slicer.util.restart()
                return
            browser = self.logic.load_cine(path)
            cine = browser.GetMasterSequenceNode()
            self._parameterNode.inputCine = browser
            slicer.modules.sequences.showSequenceBrowser(browser)
            slicer.util.setSliceViewerLayers(background=browser.GetProxyNode(cine), fit=True)
            self.setStatus(_("Loaded {name}: {n} frames").format(name=browser.GetName(),
                                                                 n=cine.GetNumberOfDataNodes()))

    def onEditSupport(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot open the Segment Editor."), waitCursor=True):
            browser, cine = self.logic.resolve_cine(p.inputCine)
            # A new support if none is chosen; the one chosen if it is a support (a plain one was offered a copy).
            segmentation = self.logic.support_segmentation(p.inputCine, p.supportSegmentation)
            p.supportSegmentation = segmentation
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(segmentation)
            editor.setSourceVolumeNode(browser.GetProxyNode(cine))

    def onModelPathChanged(self, path: str) -> None:
        self.selectModel(path)

    def selectModel(self, path: str) -> None:
        """A model was chosen: its decision and threshold become the controls' values (shown, not implied)."""
        p = self._parameterNode
        if p and p.modelPath != path:
            with slicer.util.NodeModify(p):
                p.modelPath = path
                self.logic.applyModelDefaults(p)

    def refreshModels(self) -> None:
        """The model selector: the bundled model (path ""), then the fine-tuned models of the user folder."""
        combo = self.ui.modelComboBox
        combo.clear()
        for entry in self.finetuneLogic.available_models():
            combo.addItem(entry.label, "" if entry.bundled else str(entry.path))
            combo.setItemData(combo.count - 1, entry.note or str(entry.path), qt.Qt.ToolTipRole)
        if self._parameterNode:
            combo.setCurrentIndex(max(combo.findData(self._parameterNode.modelPath), 0))

    def onModelChosen(self, index: int) -> None:
        self.selectModel(self.ui.modelComboBox.itemData(index) or "")

    def onMarkReviewed(self, current: bool) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot mark the result as reviewed."), waitCursor=True):
            frames = [self.logic.current_frame(p.inputCine)] if current else None
            reviewed = self.finetuneLogic.mark_reviewed(p.supportSegmentation, frames)
            self.setStatus(_("Reviewed result frames (fine-tuning labels): {frames}").format(
                frames=", ".join(map(str, reviewed))))
            self.finetune.refreshCases()

    def onPropagateOrCancel(self) -> None:
        if self._run is not None:
            self.cancelRun()
            self.setStatus(_("Cancelled; the support segmentation and any earlier result are unchanged"))
            return
        p = self._parameterNode
        try:
            with slicer.util.WaitCursor():
                settings = self.logic.settingsFrom(p)
                self._run = self.logic.start(p.inputCine, p.supportSegmentation, settings, p.modelPath or None)
        except Exception as exc:
            logging.exception("XRayVOS: could not start")
            self.setStatus(str(exc), error=True)
            return
        self.ui.progressBar.setRange(0, max(self._run.total, 1))
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = _("Starting {method} on {n} frames...").format(
            method=settings.method, n=self._run.cine.GetNumberOfDataNodes())
        self.setStatus("")
        self.pollTimer.start()
        self.updateGUIFromParameterNode()

    def onPoll(self) -> None:
        run = self._run
        if run is None or self._closed:
            self.pollTimer.stop()
            return
        state = self.logic.poll(run)
        self.ui.progressBar.setRange(0, max(run.total, 1))
        self.ui.progressBar.value = run.done
        eta = run.eta_seconds()
        self.ui.progressLabel.text = _("{done} / {total} frames").format(done=run.done, total=run.total) + (
            _(", about {m}:{s:02d} left").format(m=int(eta) // 60, s=int(eta) % 60) if eta is not None else "")
        if state == corelogic.RUNNING:
            return
        self.pollTimer.stop()
        self._run = None
        self.updateCineSelector()
        if state == corelogic.DONE:
            self.setStatus(_("Done in {s:.1f} s: {name} ({n} frames)").format(
                s=run.seconds or 0.0, name=run.result.GetName(), n=run.result.GetNumberOfDataNodes()))
        else:
            self.setStatus(_("Propagation failed:") + "\n" + run.error, error=True)
        self.updateGUIFromParameterNode()

    def cancelRun(self) -> None:
        if self._run is not None:
            self.logic.cancel(self._run)
            self._run = None
        self.pollTimer.stop()
        self.updateGUIFromParameterNode()
