"""The module's DICOM SEG actions (Qt): "Export to DICOM..." writes the selected support's result as a DICOM SEG
of the cine's DICOM (and adds it to Slicer's DICOM database when the cine came from it); "Load DICOM SEG..."
reads such a SEG back as a result segmentation sequence of the selected cine. The work is in
xrayvos_slicer.dicom_export; highdicom is installed on first use.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import qt
import slicer
from slicer.i18n import tr as _


class DicomSection:
    def __init__(self, ui, logic, parent, set_status: Callable[..., None], parameter_node: Callable[[], Any]) -> None:
        self.ui, self.logic, self.parent, self.setStatus, self.parameterNode = ui, logic, parent, set_status, \
            parameter_node
        ui.exportDicomSegButton.clicked.connect(self.onExport)
        ui.loadDicomSegButton.clicked.connect(self.onLoad)

    def update(self, p, running: bool) -> None:
        """Export needs a cine and a support (its result); loading needs a cine; neither while a run is in flight."""
        self.ui.exportDicomSegButton.enabled = bool(p and p.inputCine and p.supportSegmentation) and not running
        self.ui.loadDicomSegButton.enabled = bool(p and p.inputCine) and not running

    def _dependencies(self) -> bool:
        from xrayvos_slicer import dependencies

        try:
            dependencies.ensure_for_dicom_seg(confirm=not slicer.app.testingEnabled())
        except dependencies.RestartNeeded as exc:  # e.g. Slicer 5.10 imported pydicom 2.4.4 at start-up
            if slicer.util.confirmYesNoDisplay(str(exc) + "\n\n" + _("Restart Slicer now?")):
                slicer.util.restart()
            return False
        return True

    def onExport(self) -> None:
        p = self.parameterNode()
        if not (p and p.inputCine and p.supportSegmentation):
            return
        _browser, cine = self.logic.resolve_cine(p.inputCine)
        name = re.sub(r"[^\w.-]+", "_", cine.GetName()).strip("_") or "cine"
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Export the result as a DICOM SEG"),
                                              os.path.join(qt.QDir.homePath(), f"{name}_seg.dcm"),
                                              _("DICOM Segmentation (*.dcm);;All files (*)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Export to DICOM failed."), waitCursor=True):
            if not self._dependencies():
                return
            done = self.logic.export_dicom_seg(p.inputCine, p.supportSegmentation, path)
            where = (_("added to the DICOM database") if done.in_database else
                     _("the cine did not come from the DICOM database") if not done.source.from_database else
                     _("the DICOM database is not open: not added"))
            self.setStatus(_("Wrote {path}: {segments} segment(s) on {frames} frames; {where}").format(
                path=done.path, segments=done.segments, frames=done.frames, where=where))

    def onLoad(self) -> None:
        p = self.parameterNode()
        if not (p and p.inputCine):
            return
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Load a DICOM SEG of the selected cine"), "",
                                              _("DICOM Segmentation (*.dcm);;All files (*)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Loading the DICOM SEG failed."), waitCursor=True):
            if not self._dependencies():
                return
            sequence = self.logic.load_dicom_seg(p.inputCine, path)
            first = sequence.GetNthDataNode(0).GetSegmentation()
            names = [first.GetNthSegment(i).GetName() for i in range(first.GetNumberOfSegments())]
            self.setStatus(_("Loaded {path} as {name}: {frames} frames; {names}").format(
                path=path, name=sequence.GetName(), frames=sequence.GetNumberOfDataNodes(), names=", ".join(names)))
