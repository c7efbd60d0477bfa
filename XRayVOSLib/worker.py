"""Background worker: `python -m XRayVOSLib.worker --job JOB.json` runs one propagation and reports on stdout.

Slicer (or any other front end) starts this in its own process so the GUI stays responsive and a cancel
can kill it outright. The job is a small JSON file written beside its inputs:

    {"frames": "frames.npy",          # [T, H, W] uint8/uint16 frames
     "supports": "supports.npz",      # one array per support frame, keyed by the frame index ("0", "17")
     "output": "labels.npy",          # where the [T, H, W] uint8 label maps go
     "method": "local", "model": null, "device": "auto", "window": 15, "memory_every": 6,
     "threshold": null,               # object threshold; null = the model's calibrated one
     "flip_average": false,           # also run the mirrored cine and average (twice the time)
     "temporal_blend": null,          # weight of the flow-warped previous result; null = the model's
     "support_warp": null,            # weight of the flow-warped support mask; null = the model's
     "area_prior": null}              # keep each object's support area; null = the model's setting

Relative paths are resolved against the job file's folder. stdout carries one JSON object per line:

    {"event": "started", "method": ..., "frames": T, "supports": [...]}
    {"event": "progress", "done": d, "total": n}
    {"event": "done", "output": "/abs/labels.npy", "seconds": s, "torch_loaded": false}
    {"event": "error", "message": "..."}   or   {"event": "cancelled"}

Exit status: 0 done, 1 unexpected failure (traceback on stderr), 2 bad input (message on stderr),
3 cancelled (SIGTERM / SIGINT / SIGBREAK). The output is written to a temporary name and renamed, so
a reader never sees a partial file. `flow` and `copy` never import torch.

Two environment variables exist for testing the failure paths of front ends:
XRAYVOS_WORKER_TEST_DELAY (seconds to sleep after each progress report, to make a short run slow)
and XRAYVOS_WORKER_TEST_FAIL_AFTER (raise RuntimeError once that many frames are done).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from XRayVOSLib.errors import CancelledError, InputError, XRayVOSError

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 3
JOB_VERSION = 1
DEFAULTS: dict[str, Any] = {"method": "local", "model": None, "device": "auto", "window": 15, "memory_every": 6,
                            "threshold": None, "flip_average": False, "temporal_blend": None, "support_warp": None,
                            "area_prior": None}


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed at once so the parent sees progress as it happens."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def load_job(path: Path) -> dict[str, Any]:
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: job file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable job JSON ({exc})") from None
    if not isinstance(job, dict):
        raise InputError(f"{path}: a job must be a JSON object")
    missing = [key for key in ("frames", "supports", "output") if not job.get(key)]
    if missing:
        raise InputError(f"{path}: job lacks {', '.join(missing)}")
    base = path.resolve().parent
    out = {**DEFAULTS, **job}
    for key in ("frames", "supports", "output"):
        out[key] = base / Path(str(job[key]))
    if out.get("model"):
        out["model"] = str(base / Path(str(out["model"])))
    # Null (the model's own value) or a number in range, checked before torch is loaded; stored as float.
    for key, inside, allowed in (("threshold", lambda v: 0.0 < v < 1.0, "strictly between 0 and 1"),
                                 ("temporal_blend", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
                                 ("support_warp", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")):
        value = out[key]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(float(value)):
            raise InputError(f"{path}: {key} must be null or a number {allowed}, got {value!r}")
        out[key] = float(value)
    if not isinstance(out["flip_average"], bool):
        raise InputError(f"{path}: flip_average must be true or false, got {out['flip_average']!r}")
    if out["area_prior"] is not None and not isinstance(out["area_prior"], bool):
        raise InputError(f"{path}: area_prior must be null, true or false, got {out['area_prior']!r}")
    return out


def load_frames(path: Path) -> np.ndarray:
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read frames ({exc})") from None
    if not isinstance(frames, np.ndarray) or frames.ndim != 3:
        raise InputError(f"{path}: frames must be one [T, H, W] array, got shape {getattr(frames, 'shape', None)}")
    return frames


def load_supports(path: Path) -> dict[int, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            supports = {int(key): np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read supports ({exc})") from None
    if not supports:
        raise InputError(f"{path}: holds no support frame")
    return supports


def save_atomic(labels: np.ndarray, path: Path) -> None:
    """Write to a temporary name in the same folder, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, labels, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _Progress:
    """Reports progress lines; also hosts the test hooks (delay, injected failure)."""

    def __init__(self) -> None:
        self.delay = float(os.environ.get("XRAYVOS_WORKER_TEST_DELAY", "0") or 0)
        fail = os.environ.get("XRAYVOS_WORKER_TEST_FAIL_AFTER", "")
        self.fail_after = int(fail) if fail.strip() else None

    def __call__(self, done: int, total: int) -> None:
        emit("progress", done=int(done), total=int(total))
        if self.fail_after is not None and done >= self.fail_after:
            raise RuntimeError(f"XRAYVOS_WORKER_TEST_FAIL_AFTER={self.fail_after}: injected failure at frame {done}")
        if self.delay > 0:
            time.sleep(self.delay)


def install_cancel_handlers(cancel: threading.Event) -> None:
    """SIGTERM / SIGINT (and SIGBREAK on Windows) set the cancel event; propagate stops within a frame."""

    def handler(signum: int, _frame: Any) -> None:
        cancel.set()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def run(job_path: Path, cancel: threading.Event) -> int:
    started = time.monotonic()
    job = load_job(job_path)
    frames = load_frames(job["frames"])
    supports = load_supports(job["supports"])
    emit("started", method=job["method"], frames=int(frames.shape[0]), supports=sorted(supports))
    from XRayVOSLib.methods import make_method  # after the cheap checks: a network method loads torch here

    method = make_method(str(job["method"]), model=job["model"], device=str(job["device"]),
                         window=int(job["window"]), memory_every=int(job["memory_every"]),
                         object_threshold=job["threshold"], flip_average=job["flip_average"],
                         temporal_blend=job["temporal_blend"], support_warp=job["support_warp"],
                         area_prior=job["area_prior"])
    if cancel.is_set():
        raise CancelledError("cancelled before propagation started")
    labels = method.propagate(frames, supports, progress=_Progress(), cancel=cancel)
    labels = np.asarray(labels)
    if labels.shape != frames.shape:
        raise RuntimeError(f"method {job['method']!r} returned shape {labels.shape}, expected {frames.shape}")
    save_atomic(labels.astype(np.uint8, copy=False), job["output"])
    emit("done", output=str(job["output"]), seconds=round(time.monotonic() - started, 3),
         torch_loaded="torch" in sys.modules)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m XRayVOSLib.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path, help="job JSON (see the module docstring)")
    args = parser.parse_args(argv)
    cancel = threading.Event()
    install_cancel_handlers(cancel)
    try:
        return run(args.job, cancel)
    except CancelledError:
        emit("cancelled")
        print("xrayvos worker: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except XRayVOSError as exc:
        emit("error", message=str(exc))
        print(f"xrayvos worker: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        emit("cancelled")
        return EXIT_CANCELLED
    except Exception as exc:  # anything else: the parent shows the message, stderr keeps the traceback
        emit("error", message=f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
