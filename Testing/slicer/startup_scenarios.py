"""Run in a subprocess by test_slicer_startup.py, after slicer_app_stub.block() and install(); each prints
one JSON line. Not a test module (pytest collects test_*.py only)."""

from __future__ import annotations

import json
import sys

import slicer_app_stub as stub


class Anything:
    """A widget, ui or logic stand-in: the given attributes, and for any other one an object with the
    Qt-ish members the sections call while they are built."""

    def __init__(self, **values) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str):
        return Anything(connect=lambda *a: None, clicked=stub.FakeSignal(), itemDoubleClicked=stub.FakeSignal(),
                        clear=lambda: None, addItem=lambda *a: None, count=0, currentData=None,
                        findData=lambda *a: -1, setCurrentIndex=lambda *a: None)


def import_report() -> None:
    import XRayVOS
    import xrayvos_gui.dicom_section  # noqa: F401  (the widget imports these when it is first shown)
    import xrayvos_gui.finetune_section  # noqa: F401
    import xrayvos_gui.support_section  # noqa: F401

    own = sorted(m for m in sys.modules if m.split(".")[0] in ("XRayVOSLib", "xrayvos_slicer", "xrayvos_gui"))
    print(json.dumps({"own": own, "classes": [c for c in XRayVOS.__all__ if hasattr(XRayVOS, c)]}))


def cleanup_report() -> None:
    """A widget with a propagation and a fine-tune in flight and every timer running; cleanup(); then every
    slot a queued Qt event could still call."""
    import XRayVOS
    from xrayvos_gui.finetune_section import FinetuneSection
    from xrayvos_gui.support_section import SupportSection

    cancelled: list = []
    logic = Anything(cancel=cancelled.append, available_models=lambda: [], candidate_cases=lambda: [])
    widget, panel = XRayVOS.XRayVOSWidget(), object()
    widget.ui, widget.logic = Anything(), logic
    widget.pollTimer, widget.cineFilterTimer = stub.FakeTimer(panel), stub.FakeTimer(panel)
    widget.supports = SupportSection(widget.ui, logic, panel, widget.setStatus, lambda: widget._run is not None)
    widget.finetune = FinetuneSection(widget.ui, logic, lambda: None, panel)
    widget._run, widget.finetune.run = "propagation", "fine-tune"
    for timer in stub.FakeTimer.made:
        timer.start()
    widget._parameterNode = Anything(disconnectGui=lambda tag: None, inputCine=None, supportSegmentation=None)
    widget.cleanup()
    for timer in stub.FakeTimer.made:
        timer.events.clear()
    widget.updateGUIFromParameterNode()
    widget.onPoll()
    widget.onNodeAdded(None, None)
    widget.updateCineSelector()
    widget.supports.follow(widget._parameterNode)
    widget.supports.onPainted()
    widget.supports.onSegmentsChanged(None, None)
    widget.supports.refresh()
    widget.finetune.onPoll()
    for callback in stub.FakeTimer.queued:
        callback()
    timers = stub.FakeTimer.made
    print(json.dumps({"timers": len(timers), "parented": [t.parent is panel for t in timers],
                      "active": [t.active for t in timers], "after": [t.events for t in timers],
                      "cancelled": cancelled, "run": widget._run}))
