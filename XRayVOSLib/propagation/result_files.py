"""What a result folder holds besides the label PNGs: the per-frame confidence and the pass cache.

    OUT/confidence.csv      one row per frame and object: frame, object, estimated_J, support (1 = painted),
                            then the raw signals of confidence.SIGNALS (empty where a signal does not exist)
    OUT/.pass-cache/        the passes of the run (cache.py), which the next run into OUT (or one given
                            `--resume-from OUT`) reads back instead of recomputing what no support change touched
    run.json "confidence"   estimator, objects, per frame the estimated J of each object and of the frame (its
                            worst object), and the review order (lowest estimated J first, supports left out)
    run.json "incremental"  frame visits computed and read back, and whether the cache could be used (and why not)

Used by run_one.propagate_to_folder (`xrayvos propagate`, `xrayvos batch`); written into the staging folder,
so the whole folder still appears at once (outputs.OutputFolder).
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.outputs import write_text_atomic
from XRayVOSLib.propagation.cache import CACHE_FOLDER, MANIFEST, PASS_FILE, PassCache
from XRayVOSLib.propagation.confidence import SIGNALS, FrameResult, estimator_for, review_order

CONFIDENCE_CSV = "confidence.csv"
# The paths (relative, "/") these files add to a propagate result, for outputs.ResultKind.files.
RESULT_FILES = (re.escape(CONFIDENCE_CSV), rf"{re.escape(CACHE_FOLDER)}/{re.escape(MANIFEST)}",
                rf"{re.escape(CACHE_FOLDER)}/{PASS_FILE.pattern}")
REVIEW_ORDER_LENGTH = 20  # run.json lists this many frames of the review queue


def resume_cache(out: Path, resume_from: str | Path | None) -> Path | None:
    """The cache folder a run into `out` reads: `resume_from`'s (which must hold one), else `out`'s own if it
    is an earlier result with a cache, else None."""
    if resume_from is not None:
        folder = Path(resume_from).expanduser() / CACHE_FOLDER
        if not (folder / MANIFEST).is_file():
            raise InputError(f"--resume-from {resume_from}: not an earlier result of `xrayvos propagate` with a "
                             f"pass cache (no {CACHE_FOLDER}/{MANIFEST})")
        return folder
    own = Path(out) / CACHE_FOLDER
    return own if (own / MANIFEST).is_file() else None


class ResultFiles:
    """Collects a run's FrameResults and writes confidence.csv; `store` is the pass cache to hand the run."""

    def __init__(self, staging: Path, resume_from: Path | None) -> None:
        self.staging = Path(staging)
        self.store = PassCache(self.staging / CACHE_FOLDER, resume_from)
        self.resumed_from = resume_from
        self.results: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self.supports: list[int] = []

    def add(self, r: FrameResult) -> None:
        self.results[r.t] = (np.asarray(r.confidence, np.float32), {k: np.asarray(v) for k, v in r.signals.items()})
        if r.support:
            self.supports.append(r.t)

    def finish(self, method: Any, supports: Mapping[int, np.ndarray]) -> dict[str, Any]:
        """After the run of `method` (a propagation.pipeline.PassMethod) from `supports`: write confidence.csv
        and return run.json's "confidence" and "incremental" fields."""
        object_ids = sorted({int(v) for m in supports.values() for v in np.unique(m)} - {0})
        fitted = estimator_for(method.confidence_profile())
        estimator = fitted.name if fitted is not None else None
        frames = sorted(self.results)
        confidence = np.stack([self.results[t][0] for t in frames]) if frames else np.zeros((0, len(object_ids)))
        write_text_atomic(self.staging / CONFIDENCE_CSV, self._csv(frames, object_ids), durable=False)
        worst = np.min(confidence, axis=1) if confidence.shape[1] else np.ones(len(frames))
        per_frame = [{"frame": t, "estimated_J": _num(worst[i]), "objects": [_num(v) for v in confidence[i]]}
                     for i, t in enumerate(frames)]
        order = review_order(worst, self.supports)  # frames is 0..T-1: a frame's index is its number
        return {
            "confidence": {"estimator": estimator, "objects": list(object_ids), "csv": CONFIDENCE_CSV,
                           "frames": per_frame, "review_order": order[:REVIEW_ORDER_LENGTH]},
            "incremental": {**self.store.steps(),
                            "resumed_from": str(self.resumed_from.parent) if self.resumed_from else None},
        }

    def _csv(self, frames: list[int], object_ids: list[int]) -> str:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["frame", "object", "estimated_J", "support", *SIGNALS])
        for t in frames:
            confidence, signals = self.results[t]
            for k, oid in enumerate(object_ids):
                writer.writerow([t, oid, _cell(confidence[k]), int(t in self.supports),
                                 *(_cell(signals[name][k]) for name in SIGNALS)])
        return text.getvalue()


def _num(value: float) -> float | None:
    return None if not math.isfinite(float(value)) else round(float(value), 4)


def _cell(value: float) -> str:
    number = _num(value)
    return "" if number is None else f"{number:g}"


__all__ = ["CONFIDENCE_CSV", "RESULT_FILES", "ResultFiles", "resume_cache"]
