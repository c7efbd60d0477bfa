"""Cines, runs and per-frame truth for fitting and measuring the confidence estimator (tools/fit_confidence.py,
tools/review_eval.py).

A sample is one (cine, frame, object) of a propagation: the raw signals of XRayVOSLib.propagation.confidence
and the true J of that object on that frame (support frames left out: they are given, not predicted).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from XRayVOSLib.evaluation.runner import choose_support_frames, list_videos, read_annotations, read_frames
from XRayVOSLib.metrics.aggregate import VOID_LABEL
from XRayVOSLib.metrics.davis import j_measure
from XRayVOSLib.propagation.confidence import SIGNALS, PropagationResult


@dataclass
class Cine:
    name: str
    frames: np.ndarray  # [T, H, W]
    labels: dict[int, np.ndarray]  # {t: ground truth [H, W]} (every frame for synthetic sets)


def davis_cines(root: str | Path) -> Iterator[Cine]:
    """The videos of a DAVIS-layout set (JPEGImages/, Annotations/), as `xrayvos evaluate` reads them."""
    root = Path(root)
    for video in list_videos(root / "Annotations"):
        yield Cine(f"{root.name}/{video}", read_frames(root / "JPEGImages" / video),
                   read_annotations(root / "Annotations" / video))


def generated_cines(first_seed: int, count: int, frames: int, size: int, generator: str) -> Iterator[Cine]:
    """Cines drawn in memory (never written): v1 or v2 (XRayVOSLib.synth), seeds first_seed, first_seed + 1, ..."""
    from XRayVOSLib.synth import SynthV2Config, generate_cine

    config = SynthV2Config() if generator == "v2" else None
    for seed in range(first_seed, first_seed + count):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the v1 generator's exp()
            cine = generate_cine(seed, frames, size, config=config)
        yield Cine(f"{generator}-seed{seed}", np.asarray(cine.frames), {t: cine.labels[t] for t in range(frames)})


def support_frames(cine: Cine, mode: str) -> list[int]:
    """'first' or 'first+middle' (as `xrayvos evaluate --supports`)."""
    return choose_support_frames(cine.name, sorted(cine.labels), len(cine.frames), mode)


def true_j(result: PropagationResult, cine: Cine) -> np.ndarray:
    """[T, K] J of each object on each annotated frame (NaN on supports and unannotated frames)."""
    out = np.full(result.confidence.shape, np.nan)
    for t, gt in cine.labels.items():
        if t in result.support_frames:
            continue
        void = gt == VOID_LABEL
        for k, oid in enumerate(result.object_ids):
            out[t, k] = j_measure((result.labels[t] == oid) & ~void, gt == oid, void)
    return out


@dataclass
class Samples:
    """Rows over (cine, frame, object): signals {name: [N]}, true J [N], cine index [N], frame [N]."""

    signals: dict[str, np.ndarray]
    j: np.ndarray
    cine: np.ndarray
    frame: np.ndarray
    estimate: np.ndarray  # the shipped estimator's estimated J [N] (NaN where none)

    @classmethod
    def concat(cls, parts: list["Samples"]) -> "Samples":
        return cls({n: np.concatenate([p.signals[n] for p in parts]) for n in SIGNALS},
                   np.concatenate([p.j for p in parts]), np.concatenate([p.cine for p in parts]),
                   np.concatenate([p.frame for p in parts]), np.concatenate([p.estimate for p in parts]))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, j=self.j, cine=self.cine, frame=self.frame, estimate=self.estimate,
                            **{f"signal_{n}": v for n, v in self.signals.items()})

    @classmethod
    def load(cls, path: str | Path) -> "Samples":
        with np.load(path, allow_pickle=False) as data:
            return cls({n: data[f"signal_{n}"] for n in SIGNALS}, data["j"], data["cine"], data["frame"],
                       data["estimate"])


def samples_of(result: PropagationResult, cine: Cine, index: int) -> Samples:
    """The scored (frame, object) rows of one run."""
    j = true_j(result, cine)
    keep = np.isfinite(j)
    frames = np.broadcast_to(np.arange(j.shape[0])[:, None], j.shape)
    return Samples({n: result.signals[n][keep] for n in SIGNALS}, j[keep], np.full(int(keep.sum()), index),
                   frames[keep], result.confidence[keep])




def auroc(bad: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` for detecting `bad` (True = positive): the Mann-Whitney U over
    n_pos * n_neg, ties counted half (scipy's rankdata averages them)."""
    from scipy.stats import rankdata

    bad = np.asarray(bad, dtype=bool)
    n_pos, n_neg = int(bad.sum()), int((~bad).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[bad].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_figures(estimate: np.ndarray, j: np.ndarray, bad_below: float = 0.7) -> dict[str, float]:
    """AUROC of the estimated J for frames with true J < bad_below (low estimate = alarm), Spearman's rho
    with the true J, and how many rows and bad rows."""
    from scipy.stats import spearmanr

    ok = np.isfinite(estimate) & np.isfinite(j)
    estimate, j = estimate[ok], j[ok]
    bad = j < bad_below
    return {"auroc": auroc(bad, -estimate), "spearman": float(spearmanr(estimate, j).statistic),
            "rows": int(ok.sum()), "bad_rows": int(bad.sum()), "mean_j": float(j.mean()) if j.size else float("nan")}


def per_frame(samples: Samples, values: np.ndarray, how: str = "mean") -> np.ndarray:
    """Per (cine, frame): the mean (or min) of `values` over its objects, in the order of np.unique's keys."""
    keys = samples.cine.astype(np.int64) * 100000 + samples.frame
    _, inverse = np.unique(keys, return_inverse=True)
    out = np.full(inverse.max() + 1, np.inf if how == "min" else 0.0)
    if how == "min":
        np.minimum.at(out, inverse, values)
        return out
    np.add.at(out, inverse, values)
    return out / np.bincount(inverse)


__all__ = ["Cine", "Samples", "auroc", "davis_cines", "detection_figures", "generated_cines", "per_frame", "samples_of",
           "support_frames", "true_j"]
