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
from xrayvos_slicer.finetune_logic import FinetuneLogic

__all__ = ["XRayVOS", "XRayVOSLogic", "XRayVOSParameterNode", "XRayVOSTest", "XRayVOSWidget"]  # Slicer runs <name>Test

POLL_MS = 200


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
            "segmentation sequence synchronised with the cine.")
        self.parent.acknowledgementText = _(
            "Local-matching memory network after Xi, Ma and Zhuang, Neural Networks 2026.")


class XRayVOSWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._observedSegmentation = None
        self._observedBrowser = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XRayVOS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = XRayVOSLogic()

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_MS)
        self.pollTimer.timeout.connect(self.onPoll)
        self.supportRefreshTimer = qt.QTimer()  # debounce: painting fires many events
        self.supportRefreshTimer.setSingleShot(True)
        self.supportRefreshTimer.setInterval(400)
        self.supportRefreshTimer.timeout.connect(self.refreshSupportFrames)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadCineButton.clicked.connect(self.onLoadCine)
        self.ui.editSupportButton.clicked.connect(self.onEditSupport)
        self.ui.useCurrentFrameButton.clicked.connect(self.onUseCurrentFrame)
        self.ui.supportFramesList.itemDoubleClicked.connect(self.onSupportFrameDoubleClicked)
        self.ui.propagateButton.clicked.connect(self.onPropagateOrCancel)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self.onModelPathChanged)
        self.ui.modelComboBox.activated.connect(self.onModelChosen)
        self.ui.markReviewedButton.clicked.connect(lambda: self.onMarkReviewed(current=True))
        self.ui.markAllReviewedButton.clicked.connect(lambda: self.onMarkReviewed(current=False))

        from xrayvos_gui.finetune_section import FinetuneSection  # Qt part of the Fine-tune section

        settingsDir = os.path.dirname(slicer.app.slicerUserSettingsFilePath)  # per user, survives upgrades
        self.finetuneLogic = FinetuneLogic(models_dir=os.environ.get("XRAYVOS_MODELS_DIR")
                                           or os.path.join(settingsDir, "XRayVOS", "models"))
        self.logic.configure_finetune(self.finetuneLogic)
        self.finetune = FinetuneSection(self.ui, self.finetuneLogic, self.refreshModels)
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRun()
        self.finetune.cancel()
        self.removeObservers()

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
        for widget in (self.ui.windowSpinBox, self.ui.memoryEverySpinBox, self.ui.modelPathLineEdit,
                       self.ui.deviceComboBox, self.ui.modelComboBox, self.ui.decisionComboBox):
            widget.enabled = network
        self.ui.thresholdSpinBox.enabled = network and p.decision == Decision.THRESHOLD
        self.observeSupport()
        self.supportRefreshTimer.start()

    def observeSupport(self) -> None:
        """Follow the support segmentation (segments added, painting) and the browser (frame changes)."""
        p = self._parameterNode
        segmentation = p.supportSegmentation if p else None
        browser = None
        if p and p.inputCine and segmentation:
            try:
                browser = self.logic.resolve_cine(p.inputCine)[0]
                self.logic.support_sequence(browser, segmentation)  # records painting per frame from now on
            except Exception as exc:
                self.setStatus(str(exc), error=True)
                segmentation = browser = None
        if segmentation is not self._observedSegmentation:
            if self._observedSegmentation is not None:
                for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved):
                    self.removeObserver(self._observedSegmentation, event, self.onSegmentsChanged)
                self.removeObserver(self._observedSegmentation, slicer.vtkSegmentation.SourceRepresentationModified,
                                    self.onSupportModified)
            if segmentation is not None:
                for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved):
                    self.addObserver(segmentation, event, self.onSegmentsChanged)
                self.addObserver(segmentation, slicer.vtkSegmentation.SourceRepresentationModified,
                                 self.onSupportModified)
            self._observedSegmentation = segmentation
        if browser is not self._observedBrowser:
            if self._observedBrowser is not None:
                self.removeObserver(self._observedBrowser, vtk.vtkCommand.ModifiedEvent, self.onSupportModified)
            if browser is not None:
                self.addObserver(browser, vtk.vtkCommand.ModifiedEvent, self.onSupportModified)
            self._observedBrowser = browser

    def onSegmentsChanged(self, caller, event) -> None:
        qt.QTimer.singleShot(0, self.syncSegments)  # after the Segment Editor (or a frame change) has finished

    def syncSegments(self) -> None:
        p = self._parameterNode
        if p and p.inputCine and p.supportSegmentation and self._run is None:
            self.logic.sync_support_segments(p.inputCine, p.supportSegmentation)

    def onSupportModified(self, caller=None, event=None) -> None:
        self.supportRefreshTimer.start()

    def refreshSupportFrames(self) -> None:
        self.ui.supportFramesList.clear()
        p = self._parameterNode
        if not (p and p.inputCine and p.supportSegmentation) or self._observedBrowser is None:
            return
        browser = self._observedBrowser
        cine = browser.GetMasterSequenceNode()
        for t in self.logic.support_frames(browser, p.supportSegmentation):
            unit = cine.GetIndexUnit()
            item = qt.QListWidgetItem(_("Frame {frame} ({value} {unit})").format(
                frame=t, value=cine.GetNthIndexValue(t), unit=unit).replace(" )", ")"))
            item.setData(qt.Qt.UserRole, t)
            self.ui.supportFramesList.addItem(item)
        current = browser.GetSelectedItemNumber()
        self.ui.useCurrentFrameButton.text = _("Use current frame ({frame}) as support").format(frame=current)

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    # -- actions ---------------------------------------------------------------------------------------------
    def onLoadCine(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Load X-ray cine"), "",
                                              _("Cines (*.dcm *.nrrd *.nii *.nii.gz *.npy *.mp4 *.avi);;All files (*)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to load the cine."), waitCursor=True):
            from xrayvos_slicer import dependencies

            video = path.lower().endswith((".mp4", ".avi", ".mov", ".mkv"))
            dependencies.ensure_for("flow", confirm=True, read_files=True, video=video)
            browser = self.logic.load_cine(path)
            self._parameterNode.inputCine = browser
            slicer.modules.sequences.showSequenceBrowser(browser)
            slicer.util.setSliceViewerLayers(background=browser.GetProxyNode(browser.GetMasterSequenceNode()), fit=True)
            self.setStatus(_("Loaded {name}: {n} frames").format(
                name=browser.GetName(), n=browser.GetMasterSequenceNode().GetNumberOfDataNodes()))

    def onEditSupport(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot open the Segment Editor."), waitCursor=True):
            browser, cine = self.logic.resolve_cine(p.inputCine)
            segmentation = p.supportSegmentation or self.logic.support_segmentation(browser)
            p.supportSegmentation = segmentation
            self.logic.support_sequence(browser, segmentation)
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(segmentation)
            editor.setSourceVolumeNode(browser.GetProxyNode(cine))

    def onUseCurrentFrame(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot use this frame as support."), waitCursor=True):
            frame = self.logic.use_frame_as_support(p.inputCine, p.supportSegmentation)
            self.setStatus(_("Frame {frame} is a support frame").format(frame=frame))
        self.refreshSupportFrames()

    def onSupportFrameDoubleClicked(self, item) -> None:
        if self._observedBrowser is not None:
            self._observedBrowser.SetSelectedItemNumber(int(item.data(qt.Qt.UserRole)))

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
            frames = [self._observedBrowser.GetSelectedItemNumber()] if current and self._observedBrowser else None
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
        if run is None:
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
