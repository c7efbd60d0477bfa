"""The module's support controls (Qt): the painted-frame list, following the support segmentation while the
user paints, and copying a plain segmentation into a support (asked first). The work is in xrayvos_slicer.

A paint stroke re-reads only the frame shown (supports.PaintedFrames); adding or removing a segment
(which reaches every frame) re-reads them all.
"""

from __future__ import annotations

from typing import Any, Callable

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from xrayvos_slicer import sequences, supports

REFRESH_MS = 400  # debounce: a paint stroke fires many events


class SupportSection(VTKObservationMixin):
    def __init__(self, ui, logic, parent, set_status: Callable[..., None], running: Callable[[], bool]) -> None:
        VTKObservationMixin.__init__(self)
        self.ui, self.logic, self.setStatus, self.running = ui, logic, set_status, running
        self.parameterNode: Any = None
        self.refreshTimer = qt.QTimer(parent)
        self.refreshTimer.setSingleShot(True)
        self.refreshTimer.setInterval(REFRESH_MS)
        self.refreshTimer.timeout.connect(self.refresh)
        self._segmentation = self._browser = self._sequence = None
        self._painted: supports.PaintedFrames | None = None
        self._dirty = False  # the frame shown was painted since the last refresh
        self._pendingID: str | None = None  # a segmentation a question or switch is queued for
        self._closed = False
        ui.useCurrentFrameButton.clicked.connect(self.onUseCurrentFrame)
        ui.supportFramesList.itemDoubleClicked.connect(self.onFrameDoubleClicked)

    def close(self) -> None:
        """Nothing runs or is scheduled afterwards (module cleanup and Reload)."""
        self._closed = True
        self.refreshTimer.stop()
        self.removeObservers()
        self._painted = None

    # -- following the parameter node --------------------------------------------------------------------
    def follow(self, p) -> None:
        """Observe the support the parameter node names, and its browser; queue the question for a plain one."""
        if self._closed:
            return
        self.parameterNode = p
        segmentation = p.supportSegmentation if p else None
        browser = sequence = None
        if p and p.inputCine and segmentation:
            try:
                browser, _cine = self.logic.resolve_cine(p.inputCine)
                if segmentation.GetAttribute(sequences.ROLE_ATTRIBUTE) == "result":
                    raise ValueError(_("{name} is an XRayVOS result; choose the support segmentation").format(
                        name=segmentation.GetName()))
                sequence = self.logic.existing_support(p.inputCine, segmentation)
                if sequence is None or browser.GetProxyNode(sequence).GetID() != segmentation.GetID():
                    self._queue(segmentation, sequence)  # plain: ask; copied earlier: select the copy
                    sequence = None
                else:
                    self.logic.support_sequence(p.inputCine, segmentation)  # raises for another cine's support
            except Exception as exc:
                self.setStatus(str(exc), error=True)
                sequence = None
        self._observe(segmentation if sequence is not None else None, browser if sequence is not None else None,
                      sequence)
        self.refreshTimer.start()

    def _queue(self, segmentation, copy) -> None:
        if self._pendingID == segmentation.GetID():
            return
        self._pendingID = segmentation.GetID()
        qt.QTimer.singleShot(0, lambda: self.offerCopy(segmentation, copy))  # not inside a parameter update

    def offerCopy(self, segmentation, copy) -> None:
        """Ask before copying a plain segmentation into a new support; select an earlier copy directly."""
        self._pendingID = None
        p = self.parameterNode
        if self._closed or p is None or not p.inputCine or p.supportSegmentation is None \
                or p.supportSegmentation.GetID() != segmentation.GetID():
            return
        name = segmentation.GetName()
        if copy is not None:
            proxy = self.logic.resolve_cine(p.inputCine)[0].GetProxyNode(copy)
            p.supportSegmentation = proxy
            self.setStatus(_("{name} was copied into {copy} earlier: paint there").format(name=name,
                                                                                       copy=proxy.GetName()))
            return
        frame = self.logic.current_frame(p.inputCine)
        question = _("{name} is not an XRayVOS support. Supports are recorded frame by frame, in a segmentation "
                     "sequence. Copy its segments into frame {frame} of a new support segmentation? {name} itself "
                     "is left as it is.").format(name=name, frame=frame)
        if not slicer.util.confirmYesNoDisplay(question, windowTitle=_("XRayVOS: use a segmentation as support")):
            p.supportSegmentation = None
            self.setStatus(_("{name} is not used: choose a support segmentation, or none to make one").format(
                name=name))
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot copy the segmentation."), waitCursor=True):
            p.supportSegmentation = self.logic.support_segmentation(p.inputCine, segmentation)
            self.setStatus(_("{name} copied into {copy} at frame {frame}").format(
                name=name, copy=p.supportSegmentation.GetName(), frame=frame))

    def _observe(self, segmentation, browser, sequence) -> None:
        segment_events = (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved)
        if segmentation is not self._segmentation:
            if self._segmentation is not None:
                for event in segment_events:
                    self.removeObserver(self._segmentation, event, self.onSegmentsChanged)
                self.removeObserver(self._segmentation, slicer.vtkSegmentation.SourceRepresentationModified,
                                    self.onPainted)
            if segmentation is not None:
                for event in segment_events:
                    self.addObserver(segmentation, event, self.onSegmentsChanged)
                self.addObserver(segmentation, slicer.vtkSegmentation.SourceRepresentationModified, self.onPainted)
            self._segmentation = segmentation
        if browser is not self._browser:
            if self._browser is not None:
                self.removeObserver(self._browser, vtk.vtkCommand.ModifiedEvent, self.onFrameChanged)
            if browser is not None:
                self.addObserver(browser, vtk.vtkCommand.ModifiedEvent, self.onFrameChanged)
            self._browser = browser
        if sequence is not self._sequence:
            self._sequence = sequence
            self.resetPainted()

    def resetPainted(self) -> None:
        """Read every frame again (after a change that can reach all of them)."""
        self._painted = supports.PaintedFrames(self._browser, self._sequence) if self._sequence is not None else None
        self._dirty = False

    # -- events ------------------------------------------------------------------------------------------
    def onPainted(self, caller=None, event=None) -> None:
        self._dirty = True
        self.onFrameChanged()

    def onFrameChanged(self, caller=None, event=None) -> None:
        if not self._closed:
            self.refreshTimer.start()

    def onSegmentsChanged(self, caller, event) -> None:
        if not self._closed:  # after the Segment Editor (or a frame change) has finished
            qt.QTimer.singleShot(0, self.syncSegments)

    def syncSegments(self) -> None:
        p = self.parameterNode
        if self._closed or not (p and p.inputCine and p.supportSegmentation) or self.running():
            return
        self.logic.sync_support_segments(p.inputCine, p.supportSegmentation)
        self.resetPainted()
        self.refreshTimer.start()

    def refresh(self) -> None:
        if self._closed:
            return
        self.ui.supportFramesList.clear()
        painted = self._painted
        if painted is None:
            self.ui.useCurrentFrameButton.text = _("Use current frame as support")
            return
        frames = painted.update_current() if self._dirty else painted.frames()
        self._dirty = False
        cine = painted.cine
        for t in frames:
            item = qt.QListWidgetItem(_("Frame {frame} ({value} {unit})").format(
                frame=t, value=cine.GetNthIndexValue(t), unit=cine.GetIndexUnit()).replace(" )", ")"))
            item.setData(qt.Qt.UserRole, t)
            self.ui.supportFramesList.addItem(item)
        current = sequences.current_frame(painted.browser, cine)
        self.ui.useCurrentFrameButton.text = (_("Use current frame ({frame}) as support").format(frame=current)
                                              if current >= 0 else _("The frame shown is not in {cine}").format(
                                                  cine=cine.GetName()))

    # -- actions -----------------------------------------------------------------------------------------
    def onUseCurrentFrame(self) -> None:
        p = self.parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot use this frame as support."), waitCursor=True):
            frame = self.logic.use_frame_as_support(p.inputCine, p.supportSegmentation)
            self.setStatus(_("Frame {frame} is a support frame").format(frame=frame))
        self._dirty = True
        self.refresh()

    def onFrameDoubleClicked(self, item) -> None:
        p = self.parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot show this frame."), waitCursor=False):
            self.logic.show_frame(p.inputCine, int(item.data(qt.Qt.UserRole)))
