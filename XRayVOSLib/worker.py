"""Background worker: `python -m XRayVOSLib.worker --job JOB.json` runs one propagation and reports on stdout.

Slicer (or any other front end) starts this in its own process so the GUI stays responsive and a cancel
can kill it outright. The job is a small JSON file written beside its inputs (format version 2):

    {"version": 2,
     "frames": "frames.npy",          # [T, H, W] uint8/uint16 frames
     "supports": "supports.npz",      # one array per support frame, keyed by the frame index ("0", "17")
     "output": "labels.npy",          # where the [T, H, W] uint8 label maps go
     "model": null,                   # a model file; null = the shipped one
     "settings": {...},               # XRayVOSLib.settings.RunSettings.to_dict(), all keys or some
     "confidence": "confidence.npy",  # optional: where the [T, K] float32 estimated J goes (K = the objects
                                      #   in id order; supports 1.0; NaN for a method no estimator was fitted for)
     "cache": "cache/"}               # optional: a pass-cache folder, read back and rewritten in place, so a
                                      #   re-run after a new or corrected support computes only what it changed

Relative paths are resolved against the job file's folder. The settings start from the model's own
(RunSettings.from_model: the defaults overlaid with what the model file carries); the job's keys override
them, so a partial settings object changes only what it names. Every value is checked (RunSettings.validate)
before torch is loaded. stdout carries the JSON event lines of XRayVOSLib.events:

    {"event": "started", "method": ..., "frames": T, "supports": [...], "device": ..., "settings": {...}}
    {"event": "progress", "done": d, "total": n}
    {"event": "done", "output": "/abs/labels.npy", "seconds": s, "torch_loaded": false,
     "confidence": "/abs/confidence.npy" or null, "objects": [1, 2], "estimator": "network+fusion-v1" or null,
     "supports": [0, 17], "incremental": {"computed": n, "reused": m, ..., "cache": "..."} or null}
    {"event": "error", "message": "..."}   or   {"event": "cancelled", "done": d, "total": n}

Exit status as in XRayVOSLib.events: 0 done, 1 unexpected failure (traceback on stderr), 2 bad input (one
line on stderr naming the job file and the setting), 130 cancelled (SIGTERM / SIGINT / SIGBREAK). The
output location is checked before the run (a folder, below a file, not writable: exit 2), the frames and
supports before the model loads (object ids 1..255, the output being uint8); the output is written to a
temporary name and renamed, so a reader never sees a partial file. `flow`,
`flow-support` and `copy` never import torch.

Two environment variables exist for testing the failure paths of front ends:
XRAYVOS_WORKER_TEST_DELAY (seconds to sleep after each progress report, to make a short run slow)
and XRAYVOS_WORKER_TEST_FAIL_AFTER (raise RuntimeError once that many frames are done).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from XRayVOSLib.errors import CancelledError, InputError, XRayVOSError
from XRayVOSLib.events import EXIT_CANCELLED, EXIT_FAILED, EXIT_INPUT, EXIT_OK, emit
from XRayVOSLib.outputs import atomic_open, check_file_target, describe_os_error
from XRayVOSLib.propagation.validate import check_frames, check_supports
from XRayVOSLib.runtime import cancel_on_signals
from XRayVOSLib.settings import RunSettings

JOB_VERSION = 2
JOB_KEYS = ("version", "frames", "supports", "output", "model", "settings", "confidence", "cache")


@dataclass(frozen=True)
class Job:
    """A checked job: absolute paths, the model (None = shipped) and the run's settings."""

    frames: Path
    supports: Path
    output: Path
    model: str | None
    settings: RunSettings
    confidence: Path | None  # where the estimated J [T, K] float32 goes (.npy), or None
    cache: Path | None  # the pass-cache folder, or None


def load_job(path: Path) -> Job:
    """Read and check a job file; InputError names the file and the key or setting at fault."""
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: job file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable job JSON ({exc})") from None
    if not isinstance(job, dict):
        raise InputError(f"{path}: a job must be a JSON object")
    if job.get("version") != JOB_VERSION:
        raise InputError(f"{path}: job format version {job.get('version')!r} is not supported; this worker reads "
                         f"version {JOB_VERSION} (frames, supports, output, model, settings)")
    unknown = sorted(set(job) - set(JOB_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown job key(s) {', '.join(unknown)} (run options go in \"settings\")")
    missing = [key for key in ("frames", "supports", "output") if not isinstance(job.get(key), str) or not job[key]]
    if missing:
        raise InputError(f"{path}: job lacks {', '.join(missing)} (a file name each)")
    base = path.resolve().parent
    model = job.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InputError(f"{path}: model must be null or a file name, got {model!r}")
    model = str(base / model) if model else None
    # The model's carried settings first, then the job's: a partial settings object changes only what it names.
    settings = RunSettings.from_dict(job.get("settings", {}), source=str(path), base=RunSettings.from_model(model))
    output = base / job["output"]
    confidence, cache = (_optional_name(path, job, key) for key in ("confidence", "cache"))
    return Job(base / job["frames"], base / job["supports"], output, model, settings,
               base / confidence if confidence else None, base / cache if cache else None)


def _optional_name(path: Path, job: dict, key: str) -> str | None:
    value = job.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise InputError(f"{path}: {key} must be null or a file name, got {value!r}")
    return value


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
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read supports ({exc})") from None
    if not arrays:
        raise InputError(f"{path}: holds no support frame")
    bad = [key for key in arrays if not key.isdigit()]
    if bad:
        raise InputError(f"{path}: support key {bad[0]!r} is not a frame index (keys are 0-based frame numbers)")
    return {int(key): labels for key, labels in arrays.items()}


def save_labels(labels: np.ndarray, path: Path) -> None:
    """The job's output, atomically (XRayVOSLib.outputs): a reader never sees a partial file."""
    with atomic_open(path, durable=True) as handle:
        np.save(handle, labels, allow_pickle=False)


def save_confidence(confidence: np.ndarray, path: Path) -> None:
    with atomic_open(path, durable=True) as handle:
        np.save(handle, np.asarray(confidence, dtype=np.float32), allow_pickle=False)


class _Progress:
    """Reports progress lines and remembers the last one (for the "cancelled" line); also hosts the test
    hooks (delay, injected failure)."""

    def __init__(self) -> None:
        self.done, self.total = 0, 0
        self.delay = float(os.environ.get("XRAYVOS_WORKER_TEST_DELAY", "0") or 0)
        fail = os.environ.get("XRAYVOS_WORKER_TEST_FAIL_AFTER", "")
        self.fail_after = int(fail) if fail.strip() else None

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)
        emit("progress", done=self.done, total=self.total)
        if self.fail_after is not None and done >= self.fail_after:
            raise RuntimeError(f"XRAYVOS_WORKER_TEST_FAIL_AFTER={self.fail_after}: injected failure at frame {done}")
        if self.delay > 0:
            time.sleep(self.delay)


def run(job_path: Path, cancel: threading.Event, progress: _Progress) -> int:
    started = time.monotonic()
    job = load_job(job_path)
    check_file_target(job.output, f"{job_path}: output")  # before the run, which an unwritable output would waste
    if job.confidence is not None:
        check_file_target(job.confidence, f"{job_path}: confidence")
    frames = check_frames(load_frames(job.frames), str(job.frames))
    supports = load_supports(job.supports)
    try:
        check_supports(supports, int(frames.shape[0]), tuple(frames.shape[1:]))
    except InputError as exc:
        raise InputError(f"{job.supports}: {exc}") from None
    settings = job.settings
    emit("started", method=settings.method, frames=int(frames.shape[0]), supports=sorted(supports),
         device=settings.device, settings=settings.to_dict())
    from XRayVOSLib.methods import make_method  # after the cheap checks: a network method loads torch here

    method = make_method(settings, job.model)
    if cancel.is_set():
        raise CancelledError("cancelled before propagation started")
    result = method.propagate_result(frames, supports, progress=progress, cancel=cancel, cache=job.cache)
    labels = np.asarray(result.labels)
    if labels.shape != frames.shape:
        raise RuntimeError(f"method {settings.method!r} returned shape {labels.shape}, expected {frames.shape}")
    if job.confidence is not None:
        save_confidence(result.confidence, job.confidence)
    try:
        save_labels(labels.astype(np.uint8, copy=False), job.output)
    except BaseException:
        if job.confidence is not None:
            job.confidence.unlink(missing_ok=True)  # no half result: the confidence goes with the labels
        raise
    emit("done", output=str(job.output), seconds=round(time.monotonic() - started, 3),
         torch_loaded="torch" in sys.modules, confidence=str(job.confidence) if job.confidence else None,
         objects=result.object_ids,
         estimator=result.estimator, supports=result.support_frames, incremental=result.steps or None)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m XRayVOSLib.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path, help="job JSON (see the module docstring)")
    args = parser.parse_args(argv)
    cancel, progress = threading.Event(), _Progress()
    try:
        with cancel_on_signals(cancel):
            return run(args.job, cancel, progress)
    except (CancelledError, KeyboardInterrupt):
        emit("cancelled", done=progress.done, total=progress.total)
        print("xrayvos worker: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (XRayVOSError, OSError) as exc:  # bad input, unwritable output folder, full disk: one line
        message = str(exc) if isinstance(exc, XRayVOSError) else describe_os_error(exc)
        emit("error", message=message)
        print(f"xrayvos worker: error: {message}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # anything else: the parent shows the message, stderr keeps the traceback
        emit("error", message=f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
