"""Evaluation figures: per-frame J curves and a contour strip of the worst video.

matplotlib is an optional extra ('xrayvos[plots]'), imported only here and only when a plot is drawn.
Figures are built with matplotlib.figure.Figure rather than pyplot, so no global GUI backend is chosen
(this also runs inside Slicer, which has its own Qt event loop).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def available() -> bool:
    """True when matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def mean_curve(per_object: Mapping[str, Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(frames, mean over objects) from {object: {frame: value}} (string keys as in results.json)."""
    by_frame: dict[int, list[float]] = {}
    for values in per_object.values():
        for t, v in values.items():
            by_frame.setdefault(int(t), []).append(float(v))
    frames = np.array(sorted(by_frame), dtype=int)
    return frames, np.array([np.mean(by_frame[t]) for t in frames], dtype=float)


def plot_j_curves(
    curves: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | Path,
    title: str = "",
    supports: Sequence[int] = (),
) -> None:
    """One line per method: J per frame, averaged over the video's objects; support frames as dotted lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for method, per_object in curves.items():
        frames, values = mean_curve(per_object)
        if len(frames):
            # NaN at unscored frames (supports, unannotated) breaks the line there instead of bridging it.
            full = np.full(frames[-1] - frames[0] + 1, np.nan)
            full[frames - frames[0]] = values
            ax.plot(np.arange(frames[0], frames[-1] + 1), full, marker=".", markersize=3, linewidth=1.2, label=method)
    for t in supports:
        ax.axvline(t, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("frame")
    ax.set_ylabel("J (IoU)")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)


def pick_frames(frames: Sequence[int], count: int) -> list[int]:
    """`count` frames spread evenly over `frames` (all of them when there are fewer)."""
    frames = sorted(frames)
    if len(frames) <= count:
        return frames
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in idx]


def plot_worst_strip(
    frames: np.ndarray,
    pred: np.ndarray,
    gt: Mapping[int, np.ndarray],
    per_frame_j: Mapping[str, Mapping[str, float]],
    path: str | Path,
    title: str = "",
    count: int = 6,
) -> None:
    """Frames spread over the scored ones, each with predicted and ground-truth contours and its J."""
    from matplotlib.figure import Figure

    from XRayVOSLib.viz import contour_overlay

    frame_ids, mean_j = mean_curve(per_frame_j)
    j_of = dict(zip(frame_ids.tolist(), mean_j.tolist()))
    shown = pick_frames([t for t in frame_ids.tolist() if t in gt], count) or [0]
    columns = min(len(shown), 3)
    rows = (len(shown) + columns - 1) // columns
    height, width = frames.shape[1:3]
    panel = 3.0
    fig = Figure(figsize=(panel * columns, panel * rows * height / width + 0.6), dpi=100)
    for i, t in enumerate(shown):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(contour_overlay(frames[t], pred[t], gt.get(t)))
        ax.set_title(f"frame {t}  J {j_of.get(t, float('nan')):.2f}", fontsize="small")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path)
