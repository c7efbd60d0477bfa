"""The module's "Fine-tune" section and model selector (Qt). Thin: xrayvos_slicer.finetune_logic does the work.

Needs real Slicer (qt, slicer.util); the logic it drives is tested with slicer-core in Testing/.
"""

from __future__ import annotations

import logging
from typing import Callable

import qt
import slicer
from slicer.i18n import tr as _

from xrayvos_slicer import finetune_logic as FL
from xrayvos_slicer.training_cases import SegmentNameMismatch

POLL_MS = 250


class FinetuneSection:
    """Fills the case list and model combo boxes, starts / polls / cancels a fine-tune."""

    def __init__(self, ui, logic: FL.FinetuneLogic, on_models_changed: Callable[[], None], parent) -> None:
        self.ui, self.logic, self.on_models_changed = ui, logic, on_models_changed
        self.run: FL.FinetuneRun | None = None
        self._closed = False
        self.timer = qt.QTimer(parent)  # parented; close() stops it
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.onPoll)
        for combo, items in ((ui.finetuneDeviceComboBox, ("auto", "cpu", "cuda")),
                             (ui.finetuneTwoShotComboBox, FL.TWO_SHOT_CHOICES)):
            combo.clear()
            for item in items:
                combo.addItem(item)
        ui.finetuneRefreshCasesButton.clicked.connect(self.refreshCases)
        ui.finetuneButton.clicked.connect(self.onFinetuneOrCancel)
        self.refreshModels()
        self.refreshCases()

    # -- lists -----------------------------------------------------------------------------------------------
    def refreshModels(self) -> None:
        combo = self.ui.finetuneBaseModelComboBox
        current = combo.currentData
        combo.clear()
        for entry in self.logic.available_models():
            combo.addItem(entry.label, str(entry.path))
        index = combo.findData(current) if current else -1
        combo.setCurrentIndex(max(index, 0))

    def refreshCases(self) -> None:
        cases = self.ui.finetuneCasesList
        ticked = {cases.item(i).data(qt.Qt.UserRole) for i in range(cases.count)
                  if cases.item(i).checkState() == qt.Qt.Checked}
        cases.clear()
        for sequence in self.logic.candidate_cases():
            item = qt.QListWidgetItem(sequence.GetName())
            item.setData(qt.Qt.UserRole, sequence.GetID())
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked if not ticked or sequence.GetID() in ticked else qt.Qt.Unchecked)
            cases.addItem(item)

    def selectedCases(self) -> list:
        cases = self.ui.finetuneCasesList
        ids = [cases.item(i).data(qt.Qt.UserRole) for i in range(cases.count)
               if cases.item(i).checkState() == qt.Qt.Checked]
        return [slicer.mrmlScene.GetNodeByID(node_id) for node_id in ids if slicer.mrmlScene.GetNodeByID(node_id)]

    # -- run -------------------------------------------------------------------------------------------------
    def settings(self) -> FL.FinetuneSettings:
        ui = self.ui
        return FL.FinetuneSettings(name=ui.finetuneNameLineEdit.text.strip(),
                                   base_model=ui.finetuneBaseModelComboBox.currentData or None,
                                   steps=int(ui.finetuneStepsSpinBox.value),
                                   device=ui.finetuneDeviceComboBox.currentText,
                                   two_shot=ui.finetuneTwoShotComboBox.currentText)

    def onFinetuneOrCancel(self) -> None:
        if self.run is not None:
            self.cancel()
            self.setStatus(_("Cancelled; no model was written"))
            return
        data_dir = self.ui.finetuneDataPathLineEdit.currentPath.strip() or None
        cases = [] if data_dir else self.selectedCases()
        mapping = None
        for _attempt in range(2):
            try:
                with slicer.util.WaitCursor():
                    self.run = self.logic.start(self.settings(), cases=cases, data_dir=data_dir, name_mapping=mapping)
                break
            except SegmentNameMismatch as mismatch:
                if mapping is None and mismatch.suggestion and self.offerMapping(mismatch):
                    mapping = mismatch.suggestion
                    continue
                self.setStatus(str(mismatch), error=True)
                return
            except Exception as exc:
                logging.exception("XRayVOS: could not start the fine-tune")
                self.setStatus(str(exc), error=True)
                return
        self.ui.finetuneProgressBar.setRange(0, max(self.run.total, 1))
        self.ui.finetuneProgressBar.value = 0
        self.setStatus(_("Starting ({mode})...").format(mode=_("two-shot") if self.run.plan.two_shot else _("plain")))
        self.timer.start()
        self.updateButtons()

    def offerMapping(self, mismatch: SegmentNameMismatch) -> bool:
        text = "\n".join(f"{old}  \u2192  {new}" for old, new in mismatch.suggestion.items())
        return slicer.util.confirmYesNoDisplay(
            _("Segment names differ between the cases:") + "\n\n" + str(mismatch) + "\n\n"
            + _("Treat these names as the same segment?") + "\n\n" + text)

    def onPoll(self) -> None:
        run = self.run
        if run is None or self._closed:
            self.timer.stop()
            return
        try:
            state = self.logic.poll(run)
        except Exception as exc:  # e.g. the models folder is not writable: stop polling, say why
            logging.exception("XRayVOS: fine-tune poll failed")
            self.cancel()
            self.setStatus(str(exc), error=True)
            return
        self.ui.finetuneProgressBar.setRange(0, max(run.total, 1))
        self.ui.finetuneProgressBar.value = run.step
        if state == FL.RUNNING:
            eta = _(", about {m}:{s:02d} left").format(m=int(run.eta_s) // 60, s=int(run.eta_s) % 60) \
                if run.eta_s is not None else ""
            loss = _(", loss {loss:.4f}").format(loss=run.loss) if run.loss is not None else ""
            self.setStatus(_("{stage}: step {step} / {total}").format(stage=run.stage, step=run.step, total=run.total)
                           + loss + eta)
            return
        self.timer.stop()
        self.run = None
        if state == FL.DONE:
            validation = run.card.get("validation") or {}
            scores = (_("; validation J&F {before} \u2192 {after} on {n} held-out frames").format(
                before=validation.get("initial"), after=validation.get("finetuned"), n=validation.get("frames"))
                if validation.get("frames") else "")
            self.setStatus(_("Model {name} saved to {path}").format(name=run.plan.settings.name, path=run.model_path)
                           + scores)
            self.refreshModels()
            self.on_models_changed()
        elif state == FL.FAILED:
            self.setStatus(_("Fine-tuning failed:") + "\n" + run.error, error=True)
        self.updateButtons()

    def close(self) -> None:
        """Module cleanup and Reload: stop the timer and any fine-tune; nothing is scheduled afterwards."""
        self._closed = True
        self.timer.stop()
        if self.run is not None:
            self.logic.cancel(self.run)
            self.run = None

    def cancel(self) -> None:
        if self.run is not None:
            self.logic.cancel(self.run)
            self.run = None
        self.timer.stop()
        self.updateButtons()

    def updateButtons(self) -> None:
        running = self.run is not None
        self.ui.finetuneButton.text = _("Cancel fine-tuning") if running else _("Fine-tune")
        for widget in (self.ui.finetuneCasesList, self.ui.finetuneDataPathLineEdit, self.ui.finetuneBaseModelComboBox,
                       self.ui.finetuneStepsSpinBox, self.ui.finetuneDeviceComboBox, self.ui.finetuneTwoShotComboBox,
                       self.ui.finetuneNameLineEdit, self.ui.finetuneRefreshCasesButton):
            widget.enabled = not running

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.finetuneStatusLabel.text = text
        self.ui.finetuneStatusLabel.setStyleSheet("color: #c0392b;" if error else "")
