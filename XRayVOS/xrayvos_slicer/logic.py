"""XRayVOSLogic: the API behind the module's widget, and the one scripts use.

Non-blocking (the widget polls it from a QTimer):

    run = logic.start(browser, supportSegmentation, RunSettings(method="flow"))
    while logic.poll(run) == "running": ...      # run.done / run.total / run.eta_seconds()
    run.result                                     # the result segmentation sequence ("done")
    logic.cancel(run)                              # kills the worker tree, writes nothing

Blocking, for the Python console and batch scripts:

    resultSequence = logic.propagate(browser, supportSegmentation)          # the model's own settings
    settings = RunSettings.from_model(path, decision="threshold", threshold=0.3, device="cpu")
    resultSequence = logic.propagate(browser, supportSegmentation, settings, model=path)

settings None means RunSettings.from_model(model): the shipped defaults overlaid with what the model file
carries (model None = the bundled model). The result sequence records the settings in its attributes
(XRayVOS.Method, .Model, .Device, .Window, .MemoryEvery, .Decision, .Threshold (decision "threshold"
only), .TemporalBlend, .SupportWarp, .Seconds).

DICOM SEG (see dicom_export): logic.export_dicom_seg(browser, supportSegmentation, "run_seg.dcm") writes the
result as a SEG of the cine's DICOM; logic.load_dicom_seg(browser, "run_seg.dcm") reads one back.

Needs only the MRML libraries (works with the slicer-core wheel); the scene defaults to slicer.mrmlScene.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import slicer

from XRayVOSLib.events import EXIT_CANCELLED, EXIT_OK
from XRayVOSLib.settings import RunSettings

from . import dicom_export, export, results, sequences, supports
from .worker_process import WorkerProcess, worker_environment

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


@dataclass
class PropagationRun:
    """One propagation in flight: what was sent, and what the worker reported so far."""

    browser: Any
    cine: Any
    support: Any
    settings: RunSettings
    model: str | None  # None: the bundled model
    infos: list
    originals: dict
    work_dir: Path
    worker: WorkerProcess
    total: int
    done: int = 0
    state: str = RUNNING
    error: str = ""
    result: Any = None
    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    _first_progress: tuple[float, int] | None = None

    @property
    def support_frames(self) -> list[int]:
        return sorted(self.originals)

    def eta_seconds(self) -> float | None:
        """Remaining time from the rate since the first progress report (model loading excluded)."""
        if self._first_progress is None or self.state != RUNNING:
            return None
        t0, d0 = self._first_progress
        if self.done <= d0:
            return None
        rate = (time.monotonic() - t0) / (self.done - d0)
        return max(0.0, rate * (self.total - self.done))


class XRayVOSLogic:
    """Cine loading, support painting, background propagation and write-back on one MRML scene."""

    # How often the blocking propagate() looks at the worker.
    POLL_SECONDS = 0.05

    def __init__(self, scene: "slicer.vtkMRMLScene | None" = None) -> None:
        self._scene = scene
        self.python: str | None = None  # interpreter for the worker; None = PythonSlicer or sys.executable
        self.worker_env: dict[str, str] = {}  # extra environment for the worker

    @property
    def scene(self) -> "slicer.vtkMRMLScene":
        return self._scene if self._scene is not None else slicer.mrmlScene

    # -- hooks the Slicer module overrides -------------------------------------------------------------------
    def ensure_dependencies(self, method: str) -> None:
        """Install what a run of `method` needs; the core logic assumes it is there (see dependencies.py)."""

    def worker_base_environment(self) -> Mapping[str, str] | None:
        return None  # os.environ

    # -- cine ------------------------------------------------------------------------------------------------
    def load_cine(self, path: str | Path, name: str | None = None) -> "slicer.vtkMRMLSequenceBrowserNode":
        """Any file XRayVOSLib.io.read_cine reads -> a volume sequence and its browser."""
        return sequences.load_cine_file(self.scene, path, name)

    def add_cine(self, frames, frame_times: Sequence[float] | None = None, spacing: Sequence[float] | None = None,
                 name: str = "Cine") -> "slicer.vtkMRMLSequenceBrowserNode":
        """frames [T, H, W], frame_times in s, spacing (row, column) mm -> a volume sequence and its browser."""
        return sequences.add_cine_sequence(self.scene, frames, frame_times, spacing, name)

    def resolve_cine(self, cine) -> tuple["slicer.vtkMRMLSequenceBrowserNode", "slicer.vtkMRMLSequenceNode"]:
        """(browser, cine sequence) from a browser, a volume sequence or a proxy volume."""
        browser, sequence = sequences.resolve_cine(self.scene, cine)
        sequences.check_cine(sequence)
        return browser, sequence

    def cine_frames(self, cine) -> np.ndarray:
        return sequences.cine_frames(self.resolve_cine(cine)[1])

    # -- supports --------------------------------------------------------------------------------------------
    def support_sequence(self, cine, support=None) -> Any:
        """The support segmentation sequence of the cine. `support`: a support segmentation (the proxy painted
        in the Segment Editor) or its sequence; any other segmentation is copied into a new support sequence
        at the frame shown (once; the original is left as it is); None: a new, empty support."""
        browser, sequence = self.resolve_cine(cine)
        if support is not None and support.IsA("vtkMRMLSequenceNode"):
            if not browser.IsSynchronizedSequenceNodeID(support.GetID(), False):
                raise ValueError(f"{support.GetName()!r} is not synchronised with {browser.GetName()!r}")
            own = sequences.cine_of(browser, support)
            if own.GetID() != sequence.GetID():
                raise ValueError(f"{support.GetName()!r} belongs to cine {own.GetName()!r}, "
                                 f"not to {sequence.GetName()!r}")
            return support
        if support is not None and not support.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(f"{support.GetName()!r} is not a segmentation")
        return supports.ensure_support_sequence(self.scene, browser, sequence, support)

    def support_segmentation(self, cine, support=None) -> Any:
        """The proxy segmentation node of the support sequence (the node to select in the Segment Editor)."""
        browser, _ = self.resolve_cine(cine)
        return browser.GetProxyNode(self.support_sequence(cine, support))

    def existing_support(self, cine, segmentation) -> Any:
        """The support sequence `segmentation` is the proxy of, or was copied into; None for a segmentation
        never used as a support of this cine (support_sequence would copy it: the widget asks first)."""
        browser, sequence = self.resolve_cine(cine)
        found = supports.find_support_sequence(browser, segmentation)
        return found if found is not None else supports.find_copy(browser, sequence, segmentation)

    def set_support(self, cine, frame: int, labels: np.ndarray, support=None, names: Mapping[int, str] | None = None,
                    colors: Mapping[int, Sequence[float]] | None = None) -> Any:
        """Paint a label map [H, W] (0 background, k = object k) as the support at `frame`; returns the
        support segmentation node. names / colors: per label value (default "Object k", a palette colour)."""
        browser, _ = self.resolve_cine(cine)
        sequence = self.support_sequence(cine, support)
        supports.paint_frame(browser, sequence, int(frame), labels, dict(names or {}), dict(colors or {}))
        return browser.GetProxyNode(sequence)

    def support_frames(self, cine, support) -> list[int]:
        browser, _ = self.resolve_cine(cine)
        return supports.support_frames(browser, self.support_sequence(cine, support))

    def sync_support_segments(self, cine, support) -> None:
        """Give every frame the segments added at any frame, and delete from every frame a segment deleted at
        the frame shown (the widget calls this on SegmentAdded / SegmentRemoved)."""
        browser, _ = self.resolve_cine(cine)
        supports.sync_segments(browser, self.support_sequence(cine, support))

    def use_frame_as_support(self, cine, support, frame: int | None = None) -> int:
        """Make `frame` (default: the one shown) a support frame. If nothing is painted there but an earlier
        result exists, the result at that frame is copied in, ready to be corrected in the Segment Editor."""
        browser, cine_sequence = self.resolve_cine(cine)
        sequence = self.support_sequence(cine, support)
        frame = sequences.current_frame(browser, cine_sequence) if frame is None else int(frame)
        if frame < 0:
            raise ValueError(f"the browser shows no frame of {cine_sequence.GetName()!r}")
        sequences.show_frame(browser, cine_sequence, frame)
        if frame in supports.support_frames(browser, sequence):
            return frame
        result = results.find_result_sequence(browser, sequence)
        if result is None:
            raise ValueError(f"frame {frame} has nothing painted: paint it in the Segment Editor first")
        labels, ids = results.result_labelmaps(browser, result)
        first = result.GetNthDataNode(0).GetSegmentation()
        names = {k + 1: first.GetSegment(sid).GetName() for k, sid in enumerate(ids)}
        supports.paint_frame(browser, sequence, frame, labels[frame], names)
        return frame

    def current_frame(self, cine) -> int:
        """The frame of the cine the browser shows (-1: none; a biplane browser's master may have more)."""
        browser, cine_sequence = self.resolve_cine(cine)
        return sequences.current_frame(browser, cine_sequence)

    def show_frame(self, cine, frame: int) -> None:
        browser, cine_sequence = self.resolve_cine(cine)
        sequences.show_frame(browser, cine_sequence, int(frame))

    # -- propagation -----------------------------------------------------------------------------------------
    @staticmethod
    def run_settings(model: str | None = None, **choices: Any) -> RunSettings:
        """The model's settings (RunSettings.from_model) with `choices` (None: keep) over them; InputError names
        a bad one. What the widget's controls become."""
        return RunSettings.from_model(model or None, **choices)

    def start(self, cine, support, settings: RunSettings | None = None, model: str | None = None) -> PropagationRun:
        """Export frames and supports, launch the background worker and return at once.

        settings None: RunSettings.from_model(model). model None: the bundled model."""
        model = str(model) if model else None
        if model is not None and not Path(model).expanduser().is_file():
            raise ValueError(f"model file {model} does not exist")
        if settings is not None and not isinstance(settings, RunSettings):
            raise TypeError(f"settings must be a RunSettings, got {type(settings).__name__}")
        browser, cine_sequence = self.resolve_cine(cine)
        support_sequence = self.support_sequence(cine, support)
        infos = supports.sync_segments(browser, support_sequence)
        labelmaps = supports.support_labelmaps(cine_sequence, support_sequence, infos)
        if not labelmaps:
            raise ValueError("no support frame: paint at least one frame of the support segmentation "
                             f"{browser.GetProxyNode(support_sequence).GetName()!r}")
        frames = sequences.cine_frames(cine_sequence)
        originals = results.snapshot_supports(cine_sequence, support_sequence, sorted(labelmaps))
        # Installs first: reading the model's own settings needs safetensors (the default method is a network).
        self.ensure_dependencies(settings.method if settings is not None else RunSettings().method)
        settings = RunSettings.from_model(model) if settings is None else settings
        work_dir = export.make_work_dir()
        try:
            job = export.write_job(work_dir, frames, labelmaps, settings, model)
            worker = WorkerProcess(job, python=self.python,
                                   env=worker_environment(self.worker_base_environment(), self.worker_env))
            worker.start()
        except BaseException:
            export.remove_work_dir(work_dir)
            raise
        total = frames.shape[0] - len(labelmaps)
        logging.info("XRayVOS: %s on %d frames, supports %s (worker pid %s)", settings.method, frames.shape[0],
                     sorted(labelmaps), worker.pid)
        return PropagationRun(browser, cine_sequence, support_sequence, settings, model, infos, originals, work_dir,
                              worker, total)

    def poll(self, run: PropagationRun) -> str:
        """Take in the worker's reports; on success write the result sequence. Returns run.state."""
        if run.state != RUNNING:
            return run.state
        finished, events = run.worker.drain()
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                run.done, run.total = int(event.get("done", run.done)), int(event.get("total", run.total))
                if run._first_progress is None:
                    run._first_progress = (time.monotonic(), run.done)
            elif kind == "error":
                run.error = str(event.get("message", ""))
            elif kind == "done":
                run.seconds = float(event.get("seconds", 0.0))
        if not finished:
            return run.state
        code = run.worker.returncode
        if run.worker.cancel_requested or code == EXIT_CANCELLED:  # by us, or a signal from outside
            run.state = CANCELLED
        elif code == EXIT_OK:
            self._write_back(run)
        else:
            run.state = FAILED
            run.error = self._failure_text(run, code)
        export.remove_work_dir(run.work_dir)
        return run.state

    def _failure_text(self, run: PropagationRun, code: int | None) -> str:
        stderr = run.worker.error_text()
        head = run.error or f"the XRayVOS worker stopped with exit status {code}"
        return f"{head}\n{stderr}".strip() if stderr and stderr not in head else head

    def _write_back(self, run: PropagationRun) -> None:
        try:
            labels = export.read_output(run.work_dir / export.JOB_NAME)
            attributes = result_attributes(run.settings, run.model, run.seconds)
            run.result = results.write_result(self.scene, run.browser, run.support, labels, run.infos, run.originals,
                                              attributes)
            run.done = run.total
            run.state = DONE
        except Exception as exc:  # the earlier result and the support are untouched (see write_result)
            logging.exception("XRayVOS: writing the result failed")
            run.state, run.error = FAILED, f"writing the result failed: {exc}"

    def cancel(self, run: PropagationRun) -> None:
        """Stop the worker and its children; nothing is written, temporary files are removed."""
        if run.state == RUNNING:
            run.worker.cancel()
            run.state = CANCELLED
        export.remove_work_dir(run.work_dir)

    def propagate(self, cine, support, settings: RunSettings | None = None, model: str | None = None,
                  timeout: float | None = None, progress: Callable[[int, int], None] | None = None) -> Any:
        """Blocking run for scripts; returns the result segmentation sequence or raises with the worker's error.

        settings None: RunSettings.from_model(model). progress(done, total) as the worker reports.
        """
        run = self.start(cine, support, settings, model)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = -1
        try:
            while self.poll(run) == RUNNING:
                if progress is not None and run.done != last:
                    last = run.done
                    progress(run.done, run.total)
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel(run)
                    raise TimeoutError(f"XRayVOS propagation did not finish within {timeout} s (cancelled)")
                time.sleep(self.POLL_SECONDS)
        except BaseException:
            self.cancel(run)  # Ctrl+C in a script must not leave a worker behind
            raise
        if run.state != DONE:
            raise RuntimeError(run.error or f"XRayVOS propagation {run.state}")
        return run.result

    # -- results ---------------------------------------------------------------------------------------------
    def result_sequence(self, cine, support) -> Any:
        browser, _ = self.resolve_cine(cine)
        return results.find_result_sequence(browser, self.support_sequence(cine, support))

    def label_arrays(self, cine, node) -> tuple[np.ndarray, list[str]]:
        """([T, H, W] uint8 label maps, segment names by label value) of a segmentation sequence: a result,
        a support, or the proxy segmentation of either. Frames without an item stay 0."""
        browser, _ = self.resolve_cine(cine)
        sequence = node
        if not node.IsA("vtkMRMLSequenceNode"):
            if not browser.IsProxyNodeID(node.GetID()):
                raise ValueError(f"{node.GetName()!r} is not a sequence of {browser.GetName()!r} nor its proxy")
            sequence = browser.GetSequenceNode(node)
        labels, ids = results.result_labelmaps(browser, sequence)
        first = sequence.GetNthDataNode(0).GetSegmentation()
        return labels, [first.GetSegment(sid).GetName() for sid in ids]


    # -- DICOM SEG -------------------------------------------------------------------------------------------
    def export_dicom_seg(self, cine, node, out_path: str | Path, series_description: str = "XRayVOS segmentation",
                         database: Any = None) -> dicom_export.SegExport:
        """The result of `node` (a support or result sequence, or the proxy segmentation of either) as a DICOM
        SEG of the cine's DICOM images at out_path; inserted into Slicer's DICOM database when the cine came from
        it. database: what answers fileForInstance / insert (default: Slicer's, where one is open)."""
        browser, _ = self.resolve_cine(cine)
        result = self._result_of(browser, cine, node)
        return dicom_export.export_result(browser, result, out_path, database, series_description)

    def load_dicom_seg(self, cine, seg_path: str | Path, database: Any = None) -> Any:
        """A DICOM SEG of the cine (export_dicom_seg, `xrayvos export-seg`) -> a new result segmentation sequence
        synchronised with it; an InputError names a SEG of another cine."""
        browser, sequence = self.resolve_cine(cine)
        return dicom_export.load_seg(self.scene, browser, sequence, seg_path, database)

    def _result_of(self, browser: "slicer.vtkMRMLSequenceBrowserNode", cine, node) -> Any:
        if node is None:
            raise ValueError("no support segmentation selected")
        sequence = node if node.IsA("vtkMRMLSequenceNode") else (
            browser.GetSequenceNode(node) if browser.IsProxyNodeID(node.GetID()) else None)
        if sequence is not None and sequence.GetAttribute(sequences.ROLE_ATTRIBUTE) == results.ROLE:
            return sequence
        support = sequence if sequence is not None else self.existing_support(cine, node)
        result = results.find_result_sequence(browser, support) if support is not None else None
        if result is None:
            raise ValueError(f"{node.GetName()!r} has no XRayVOS result yet: Propagate first")
        return result

def result_attributes(settings: RunSettings, model: str | None, seconds: float | None) -> dict[str, Any]:
    """What a result sequence records about its run; None removes an attribute left by an earlier run."""
    return {"XRayVOS.Method": settings.method, "XRayVOS.Model": model or "bundled", "XRayVOS.Device": settings.device,
            "XRayVOS.Window": settings.window, "XRayVOS.MemoryEvery": settings.memory_every,
            "XRayVOS.Decision": settings.decision,
            "XRayVOS.Threshold": settings.threshold if settings.decision == "threshold" else None,
            "XRayVOS.TemporalBlend": settings.temporal_blend, "XRayVOS.SupportWarp": settings.support_warp,
            "XRayVOS.Seconds": "" if seconds is None else seconds}


__all__ = ["XRayVOSLogic", "PropagationRun", "RunSettings", "result_attributes", "RUNNING", "DONE", "FAILED",
           "CANCELLED"]
