"""Baselines `copy`, `flow` and `flow-support` through the shared pass loop: tracking, the two-support merge rule,
supports returned bit-identical by every method, progress and cancel."""

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
from XRayVOSLib.settings import RunSettings


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
    chained = make_method(RunSettings(method="flow")).propagate(frames, {0: labels[0]})
    anchored = make_method(RunSettings(method="flow-support")).propagate(frames, {0: labels[0]})
    assert make_method(RunSettings(method="flow-support")).name == "flow-support"
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
    assert pred.dtype == np.uint8
    np.testing.assert_array_equal(pred[0], first)  # both supports come back bit-identical
    np.testing.assert_array_equal(pred[20], last)


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


def relabelled_supports(dtype: type, count: int) -> dict[int, np.ndarray]:
    """One or two supports on a 9-frame cine, with non-contiguous ids in the given dtype."""
    a, b = np.zeros((64, 64), dtype), np.zeros((64, 64), dtype)
    a[5:20, 5:20], a[40:50, 40:50] = 3, 200
    b[30:60, 2:12], b[8:16, 40:60] = 200, 3
    return {2: a, 6: b} if count == 2 else {6: b}


@pytest.mark.usefixtures("torch_one_thread")
@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("method", ["local", "flow", "flow-support", "copy"])
def test_every_method_returns_the_supports_bit_identical(method: str, count: int) -> None:
    frames = static_cine(9)
    runner = make_method(RunSettings(method=method, device="cpu"))  # local: the shipped model
    for dtype in (np.uint8, np.uint16, np.int32):
        supports = relabelled_supports(dtype, count)
        out = runner.propagate(frames, supports)
        assert out.shape == frames.shape and out.dtype == dtype, (method, dtype)
        for t, mask in supports.items():
            assert np.array_equal(out[t], mask), (method, dtype, t)
        assert set(np.unique(out)) <= {0, 3, 200}
    # iter_propagate hands back the very arrays it was given, supports first
    supports = relabelled_supports(np.uint16, count)
    yielded = list(runner.iter_propagate(frames, supports))
    assert [t for t, _ in yielded[:count]] == sorted(supports)
    assert all(labels is supports[t] for t, labels in yielded[:count])
    assert sorted(t for t, _ in yielded) == list(range(9))


def test_baselines_decide_by_the_plain_arg_max_whatever_the_settings_say() -> None:
    frames = static_cine(9)
    a, b = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    a[10:30, 10:30], b[20:40, 20:40] = 1, 1
    for name in ("flow", "copy"):
        plain = make_method(RunSettings(method=name)).propagate(frames, {0: a, 8: b})
        for decision, threshold in (("threshold", 0.2), ("threshold", 0.8), ("area-prior", 0.5)):
            other = make_method(RunSettings(method=name, decision=decision, threshold=threshold))
            np.testing.assert_array_equal(other.propagate(frames, {0: a, 8: b}), plain, err_msg=f"{name} {decision}")


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


def test_make_method_builds_baselines_from_settings() -> None:
    assert make_method(RunSettings(method="flow")).name == "flow"
    # the baselines read no model and no network setting: a model path that does not exist is not opened
    assert make_method(RunSettings(method="copy", window=3), "no/such/model.safetensors").name == "copy"
    assert isinstance(make_method(RunSettings(method="flow-support")), FlowPropagator)


def test_baselines_and_davis_metrics_do_not_import_torch() -> None:
    """A baseline run, made through make_method and the shared pass loop, and the DAVIS metrics stay torch-free."""
    code = (
        "import sys, numpy as np, XRayVOSLib.metrics;"
        "from XRayVOSLib.methods import make_method; from XRayVOSLib.settings import RunSettings;"
        "frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8);"
        "mask = np.zeros((32, 32), np.uint8); mask[8:16, 8:16] = 1;"
        "[make_method(RunSettings(method=m)).propagate(frames, {0: mask, 3: mask}) for m in"
        " ('flow', 'flow-support', 'copy')];"
        "XRayVOSLib.metrics.j_measure(mask > 0, mask > 0);"
        "bad = [m for m in ('torch', 'monai') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
