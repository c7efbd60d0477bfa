"""What runs on a Dask worker: one run of a batch (run_one.run_to_folder, as `propagate` does it), then its
scores, returned as one summary row. The method, with its model, is kept in this worker process between runs.

Errors that belong to the run (a bad cine or mask, an output the run may not write: XRayVOSError, OSError)
are caught here and returned as a failed row, so Dask does not retry what would fail the same way again; any
other exception (a bug, MemoryError) leaves the task, and the driver's `retries` decide whether it runs again.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from XRayVOSLib.batch.manifest import RunSpec
from XRayVOSLib.errors import InputError, XRayVOSError
from XRayVOSLib.outputs import describe_os_error
from XRayVOSLib.run_one import build_method, run_to_folder
from XRayVOSLib.settings import RunSettings

# The methods this thread has built, by (model, settings): per thread, because a worker started with several
# threads runs several cines at once and a method's engine holds one run's memory while it runs.
_LOCAL = threading.local()
_LOCK = threading.Lock()
LOADS = {"count": 0}  # how many methods this process has built (the tests read it through client.run)


def cached_method(settings: RunSettings, model: str | None) -> tuple[Any, dict]:
    """The method of `settings` and `model`, built (the model loaded) the first time this thread asks."""
    methods = _LOCAL.__dict__.setdefault("methods", {})
    key = (str(model), json.dumps(settings.to_dict(), sort_keys=True))
    if key not in methods:
        methods[key] = build_method(settings, model, prog="xrayvos batch (worker)")
        with _LOCK:
            LOADS["count"] += 1
    return methods[key]


class IgnoreInterrupt(WorkerPlugin):
    """For the embedded cluster's workers: Ctrl-C in a terminal reaches every process of its group, and the
    driver alone handles it (cancels the batch, closes the cluster) instead of each worker dying with a
    KeyboardInterrupt traceback. setup runs on the worker's event loop, in its main thread."""

    name = "xrayvos-ignore-interrupt"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def loads() -> int:
    return LOADS["count"]


def run_task(spec: RunSpec, out_root: str, settings: dict[str, Any], model: str | None,
             model_sha256: str | None, dicom_seg: bool, skip: bool) -> dict[str, Any]:
    """One summary row. skip: the run is complete (same fingerprint): only read its run.json and score it."""
    settings_obj = RunSettings.from_dict(settings, source="batch settings")
    out = Path(out_root) / spec.id
    try:
        if skip:
            record, status = json.loads((out / "run.json").read_text(encoding="utf-8")), "skipped"
        else:
            seg = Path(out_root) / f"{spec.id}.seg.dcm" if dicom_seg else None
            _, record = run_to_folder(spec.cine, list(spec.supports), out, settings_obj, model,
                                      build=lambda s: cached_method(s, model), model_sha256=model_sha256,
                                      dicom_seg=seg)
            status = "done"
    except XRayVOSError as exc:
        return failed_row(spec, " ".join(str(exc).splitlines()))
    except OSError as exc:
        return failed_row(spec, describe_os_error(exc))
    row = record_row(spec, record, status)
    if spec.gt is not None:
        try:
            row.update(score_run(spec, out))
        except (XRayVOSError, OSError) as exc:
            row.update(status="failed", error=f"scoring against {spec.gt}: {' '.join(str(exc).splitlines())}")
    return row


def record_row(spec: RunSpec, record: dict[str, Any], status: str) -> dict[str, Any]:
    """A summary row from a run's run.json record."""
    return {"id": spec.id, "status": status, "frames": record.get("frames"),
            "objects": len(record.get("objects") or []), "seconds": record.get("seconds"), "fps": record.get("fps"),
            "error": None}


def failed_row(spec: RunSpec, error: str) -> dict[str, Any]:
    return {"id": spec.id, "status": "failed", "frames": None, "objects": None, "seconds": None, "fps": None,
            "error": error}


def score_run(spec: RunSpec, out: Path) -> dict[str, float | None]:
    """J, F and J&F of the run against its ground-truth folder, as `evaluate` scores a video: every annotated
    frame but the supports, the objects of the supports' ground truth, an object's mean over its frames, the
    run's mean over its objects. J and F alone, through metrics.jf_measure: metrics.score_video also computes
    Dice and HD95 with MONAI, which would load torch into a flow-only worker and cost more than the run."""
    import numpy as np

    from XRayVOSLib.evaluation.runner import read_annotations
    from XRayVOSLib.io import read_mask_folder
    from XRayVOSLib.metrics import jf_measure, mean_finite
    from XRayVOSLib.metrics.aggregate import VOID_LABEL, video_object_ids

    gt = read_annotations(spec.gt)
    pred = read_mask_folder(out)
    supports = spec.support_frames
    frames = sorted(t for t in gt if t not in supports)
    missing = [t for t in frames if t not in pred]
    if missing or any(np.shape(pred[t]) != np.shape(gt[t]) for t in frames):
        raise InputError(f"the ground truth does not match the run: frames {missing[:10]} are not in the result"
                         if missing else f"the ground truth's frames are not {np.shape(pred[frames[0]])}")
    per_object = []
    for oid in video_object_ids(gt, supports):
        scores = []
        for t in frames:
            void = np.asarray(gt[t]) == VOID_LABEL
            scores.append(jf_measure((np.asarray(pred[t]) == oid) & ~void, np.asarray(gt[t]) == oid, void))
        per_object.append([mean_finite([s[i] for s in scores]) for i in range(3)])
    means = [mean_finite([o[i] for o in per_object]) for i in range(3)]
    # NaN (nothing to score) is not JSON: None, an empty cell in summary.csv
    return {name: round(v, 6) if math.isfinite(v) else None for name, v in zip(("J", "F", "J&F"), means)}


__all__ = ["IgnoreInterrupt", "cached_method", "failed_row", "loads", "record_row", "run_task", "score_run"]
