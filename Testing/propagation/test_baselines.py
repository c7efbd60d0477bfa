"""Baselines `copy`, `flow` and `flow-support`: tracking, the two-support merge rule, supports, progress and cancel."""

from __future__ import annotations

import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from XRayVOSLib.baselines import CopyPropagator, FlowPropagator
from XRayVOSLib.errors import CancelledError, InputError
from XRayVOSLib.methods import make_method
from XRayVOSLib.metrics import j_measure


def moving_blob_cine(num_frames: int = 20, size: int = 128, step: int = 2, seed: int = 0):
    """A bright textured disk sliding right `step` px/frame over a static textured, noisy background."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 2) * 0.5 + 40
    pad = step * num_frames
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (size, size + pad)).astype(np.float32), (0, 0), 1.5) * 0.6 + 120
    yy, xx = np.mgrid[:size, :size]
    frames, labels = [], []
    for t in range(num_frames):
        inside = (yy - size // 2) ** 2 + (xx - (size // 4 + step * t)) ** 2 < 18**2
        frame = background.copy()
        frame[inside] = texture[:, pad - step * t : pad - step * t + size][inside]
        frame += rng.normal(0, 3, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        labels.append(inside.astype(np.uint8))
    return np.stack(frames), np.stack(labels)


def static_cine(num_frames: int, size: int = 64, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 2)
    return np.stack([np.clip(base + rng.normal(0, 1, base.shape), 0, 255).astype(np.uint8) for _ in range(num_frames)])


def mean_j(pred: np.ndarray, gt: np.ndarray, frames) -> float:
    return float(np.mean([j_measure(pred[t] == 1, gt[t] == 1) for t in frames]))


def test_flow_tracks_a_translating_blob_and_copy_does_not() -> None:
    frames, labels = moving_blob_cine()
    flow = FlowPropagator().propagate(frames, {0: labels[0]})
    copy = CopyPropagator().propagate(frames, {0: labels[0]})
    assert flow.shape == labels.shape and flow.dtype == np.uint8
    assert mean_j(flow, labels, range(1, 20)) > 0.9
    assert mean_j(copy, labels, range(1, 20)) < 0.5  # the blob moves, so standing still must score badly


def test_flow_support_warps_straight_from_the_support_so_a_bad_frame_does_not_carry_on() -> None:
    frames, labels = moving_blob_cine(num_frames=10)
    frames[3] = np.random.default_rng(5).uniform(0, 255, frames[3].shape).astype(np.uint8)  # one corrupt frame
    chained = make_method("flow").propagate(frames, {0: labels[0]})
    anchored = make_method("flow-support").propagate(frames, {0: labels[0]})
    assert make_method("flow-support").name == "flow-support"
    np.testing.assert_array_equal(anchored[0], labels[0])
    later = range(4, 10)
    assert mean_j(anchored, labels, later) > 0.85  # frames after the corrupt one are solved against frame 0
    assert mean_j(chained, labels, later) < mean_j(anchored, labels, later) - 0.2  # the chain inherits the loss


def test_flow_runs_backward_from_a_later_support_and_on_uint16() -> None:
    frames, labels = moving_blob_cine(num_frames=12)
    frames16 = frames.astype(np.uint16) * 200 + 1000  # a 16-bit cine with an offset, as DICOM gives
    pred = FlowPropagator().propagate(frames16, {11: labels[11]})
    assert mean_j(pred, labels, range(11)) > 0.9


def test_flow_two_supports_nearer_support_wins_and_midpoint_tie_goes_to_earlier() -> None:
    frames = static_cine(21)
    first, last = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    # The supports disagree about which object the square is; the earlier says 2, so that a plain argmax
    # (which prefers the lower channel, object 1) would break the midpoint tie the wrong way.
    first[20:40, 20:40] = 2
    last[20:40, 20:40] = 1
    pred = FlowPropagator().propagate(frames, {0: first, 20: last})
    centre = pred[:, 30, 30]
    assert set(centre[1:10].tolist()) == {2}, centre  # nearer frame 0
    assert set(centre[11:20].tolist()) == {1}, centre  # nearer frame 20
    assert centre[10] == 2  # midpoint: equal weights, tie -> earlier support


def test_supports_returned_exactly_and_copy_picks_nearest() -> None:
    frames = static_cine(9)
    a, b = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    a[5:20, 5:20], a[40:50, 40:50] = 3, 7  # non-contiguous ids survive unchanged
    b[30:60, 2:12] = 7
    supports = {2: a, 6: b}
    for method in (FlowPropagator(), CopyPropagator()):
        out = method.propagate(frames, supports)
        np.testing.assert_array_equal(out[2], a)
        np.testing.assert_array_equal(out[6], b)
    copy = CopyPropagator().propagate(frames, supports)
    for t, source in {0: a, 1: a, 3: a, 4: a, 5: b, 7: b, 8: b}.items():  # frame 4 is a tie -> earlier
        np.testing.assert_array_equal(copy[t], source, err_msg=f"frame {t}")


@pytest.mark.parametrize("method", [FlowPropagator(), CopyPropagator()], ids=["flow", "copy"])
def test_progress_reaches_total_and_cancel_stops_within_one_frame(method) -> None:
    frames = static_cine(10)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    calls: list[tuple[int, int]] = []
    method.propagate(frames, {0: mask, 5: mask}, progress=lambda d, t: calls.append((d, t)))
    total = calls[-1][1]
    assert calls[-1] == (total, total) and [d for d, _ in calls] == list(range(1, total + 1))
    assert total >= 8  # every non-support frame is visited at least once

    cancel = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        cancel.set()

    with pytest.raises(CancelledError):
        method.propagate(frames, {0: mask}, progress=progress, cancel=cancel)
    assert seen == [1]


def test_bad_input_is_rejected() -> None:
    frames = static_cine(5)
    with pytest.raises(InputError, match="support frame 9"):
        FlowPropagator().propagate(frames, {9: np.ones((64, 64), np.uint8)})
    with pytest.raises(InputError, match="empty"):
        CopyPropagator().propagate(frames, {0: np.zeros((64, 64), np.uint8)})


def test_make_method_builds_baselines() -> None:
    assert make_method("flow").name == "flow"
    assert make_method("copy", window=3).name == "copy"


def test_baselines_and_davis_metrics_do_not_import_torch() -> None:
    code = (
        "import sys, XRayVOSLib.baselines.flow, XRayVOSLib.baselines.copy, XRayVOSLib.metrics;"
        "bad = [m for m in ('torch', 'monai') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
