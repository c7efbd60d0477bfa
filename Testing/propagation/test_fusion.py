"""Output fusion (propagation/fusion.py): the previous result and the support mask, warped by real DIS flow
(propagation/flow.py), blended into each frame; the anchor is the flow-support baseline's warp; the weights
come from the model file and the CLI flags."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from XRayVOSLib.errors import InputError
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.methods import make_method
from XRayVOSLib.model.checkpoint import rewrite_info
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.propagation.decision import probabilities_to_labels
from XRayVOSLib.propagation.flow import FlowSolver, Warp
from XRayVOSLib.propagation.fusion import PassFusion
from XRayVOSLib.propagation.intensity import intensity_range, to_unit_range, unit_to_uint8
from XRayVOSLib.propagation.merge import labels_to_onehot
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import generate_cine

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def sliding_texture(num_frames: int, step: int = 2, size: int = 64) -> list[np.ndarray]:
    """uint8 frames of a blurred-noise texture whose content moves right by `step` px per frame."""
    rng = np.random.default_rng(0)
    wide = cv2.GaussianBlur(rng.uniform(0, 255, (size, size + step * num_frames)).astype(np.float32), (0, 0), 1.5)
    wide = cv2.normalize(wide, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    pad = step * num_frames
    return [np.ascontiguousarray(wide[:, pad - step * t: pad - step * t + size]) for t in range(num_frames)]


def band_support(column: int = 20, width: int = 4, size: int = 64) -> np.ndarray:
    labels = np.zeros((size, size), np.uint8)
    labels[:, column: column + width] = 1
    return labels_to_onehot(labels, [1])


def test_dis_flow_and_warp_follow_a_translation() -> None:
    frames = sliding_texture(2)
    flow = FlowSolver()(frames[1], frames[0])
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    inner = flow[8:-8, 8:-8]
    np.testing.assert_allclose(inner[..., 0], -2.0, atol=0.05)  # frame 1 at x looks like frame 0 at x - 2
    np.testing.assert_allclose(inner[..., 1], 0.0, atol=0.05)
    assert not FlowSolver()(frames[0], frames[0]).any()  # identical frames: exactly zero flow
    labels = np.zeros((64, 64), np.uint8)
    labels[:, 20:24] = 5
    moved = Warp()(labels, np.full((64, 64, 2), [-2.0, 0.0], np.float32), nearest=True)
    assert moved.dtype == np.uint8 and set(np.unique(moved)) == {0, 5}
    assert np.array_equal(np.nonzero(moved[10])[0], np.arange(22, 26))
    # more channels than cv2.remap takes at once
    stack = Warp()(np.stack([labels.astype(np.float32)] * 6), np.zeros((64, 64, 2), np.float32))
    assert stack.shape == (6, 64, 64) and np.array_equal(stack[5], labels.astype(np.float32))


def dis_images(frames: np.ndarray) -> np.ndarray:
    """The frames as the fusion and the flow baselines hand them to DIS."""
    return unit_to_uint8(to_unit_range(frames, intensity_range(frames)))


def test_dis_images_keep_uint8_and_window_wider_cines_once() -> None:
    frames = np.stack(sliding_texture(3))
    assert np.array_equal(dis_images(frames), frames)  # uint8 round-trips exactly
    wide = frames.astype(np.uint16) * 40 + 1000
    scaled = dis_images(wide)
    assert scaled.dtype == np.uint8 and scaled.min() == 0 and scaled.max() == 255
    # one window for the whole cine: a stored value maps to one uint8 value on every frame, in order
    values = np.unique(frames)
    mapped = [np.unique(scaled[frames == v]) for v in values]
    assert all(len(m) == 1 for m in mapped)
    assert np.all(np.diff(np.concatenate(mapped).astype(int)) >= 0)
    assert not dis_images(np.full((2, 16, 16), 7.0)).any()  # a flat cine


def test_temporal_blend_carries_the_last_result_along_the_motion() -> None:
    frames = sliding_texture(3)
    probs = np.full((2, 64, 64), 0.5, np.float32)
    fusion = PassFusion(band_support(), frames[0], blend=0.8, anchor=0.0, solver=FlowSolver(), warp=Warp())
    fused = fusion(probs, frames[1])
    rows = slice(8, -8)
    np.testing.assert_allclose(fused[1, rows, 23:24], 0.1 + 0.8, atol=0.02)  # the band moved to 22..25
    np.testing.assert_allclose(fused[1, rows, 19:21], 0.1, atol=0.02)
    np.testing.assert_allclose(fused.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs, 0.5)  # the network's probabilities are not overwritten
    fused = fusion(probs, frames[2])  # the carried result moves on to 24..27, weaker
    np.testing.assert_allclose(fused[1, rows, 25:26], 0.1 + 0.8 * 0.9, atol=0.02)


def test_support_anchor_warps_straight_from_the_support_without_drift() -> None:
    frames = sliding_texture(3)
    probs = np.full((2, 64, 64), 0.5, np.float32)
    fusion = PassFusion(band_support(), frames[0], blend=0.0, anchor=0.5, solver=FlowSolver(), warp=Warp())
    rows = slice(8, -8)
    for t, column in ((1, 23), (2, 25)):
        fused = fusion(probs, frames[t])
        np.testing.assert_allclose(fused[1, rows, column: column + 1], 0.25 + 0.5, atol=0.02)  # never decays
        np.testing.assert_allclose(fused[1, rows, column - 4: column - 2], 0.25, atol=0.02)
    # both terms on a still cine (zero flow): exactly the formula of the module docstring
    still = PassFusion(band_support(), frames[0], blend=0.6, anchor=0.25, solver=FlowSolver(), warp=Warp())
    support = band_support()
    expected = 0.75 * (0.4 * probs + 0.6 * support) + 0.25 * support
    np.testing.assert_allclose(still(probs, frames[0]), expected, atol=1e-6)


def test_still_cine_keeps_the_support_mask_that_a_random_network_loses() -> None:
    cine = generate_cine(seed=8, num_frames=5, size=64)
    frames = np.repeat(cine.frames[:1], 5, axis=0)  # no motion: DIS flow is zero
    supports = {0: cine.labels[0]}
    torch.manual_seed(3)
    net = LocalMatchingNetwork().eval()

    def run(blend: float, anchor: float) -> np.ndarray:
        settings = RunSettings(device="cpu", decision="threshold", temporal_blend=blend, support_warp=anchor)
        return Propagator.load(net, settings, accelerate=False).propagate(frames, supports)

    for blend, anchor in ((0.9, 0.0), (0.0, 0.9)):
        kept = run(blend, anchor)
        for t in range(5):
            np.testing.assert_array_equal(kept[t], cine.labels[0])
    assert not all(np.array_equal(m, cine.labels[0]) for m in run(0.0, 0.0)[1:])


def edge_pixels(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Pixels whose sample point x + flow(x) does not sit inside one label: the 3x3 block from the floor of
    the sample point (border replicated) holds both bilinear's 2x2 block (also after cv2's 1/32-px rounding)
    and the nearest pixel. Elsewhere a bilinear warp of the one-hot and a nearest warp of the labels agree."""
    height, width = labels.shape
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    x0, y0 = np.floor(gx + flow[..., 0]).astype(int), np.floor(gy + flow[..., 1]).astype(int)
    blocks = [labels[np.clip(y0 + dy, 0, height - 1), np.clip(x0 + dx, 0, width - 1)]
              for dy in range(3) for dx in range(3)]
    return np.any([b != blocks[0] for b in blocks[1:]], axis=0)


def test_fusion_anchor_is_the_flow_support_warp() -> None:
    """temporal_blend 0, support_warp 1: the network's output is the support one-hot warped (bilinear) by
    the same DIS flow that flow-support warps the labels with (nearest), so both agree off object edges.
    Measured on this cine (seed 8, 192 px, 8 frames): per-frame foreground IoU 0.955-0.999, mean 0.972."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cine = generate_cine(seed=8, num_frames=8, size=192)
    support, ids = cine.labels[0], [int(i) for i in np.unique(cine.labels[0]) if i]
    torch.manual_seed(0)
    settings = RunSettings(device="cpu", decision="threshold", temporal_blend=0.0, support_warp=1.0)
    anchored = Propagator.load(LocalMatchingNetwork().eval(), settings, accelerate=False)
    fused = anchored.propagate(cine.frames, {0: support})
    baseline = make_method(RunSettings(method="flow-support")).propagate(cine.frames, {0: support})
    solver, warp = FlowSolver(), Warp()  # the same calls in the same order as both runs make
    ious = []
    for t in range(1, 8):
        flow = solver(cine.frames[t], cine.frames[0])
        rebuilt = probabilities_to_labels(warp(labels_to_onehot(support, ids), flow), ids)
        np.testing.assert_array_equal(fused[t], rebuilt, err_msg=f"frame {t}")  # exactly the anchor's warp
        np.testing.assert_array_equal(baseline[t], warp(support, flow, nearest=True), err_msg=f"frame {t}")
        differ = fused[t] != baseline[t]
        assert not np.any(differ & ~edge_pixels(support, flow)), f"frame {t}: disagreement off an edge"
        both, either = (fused[t] > 0) & (baseline[t] > 0), (fused[t] > 0) | (baseline[t] > 0)
        ious.append(both.sum() / either.sum())
    assert min(ious) > 0.94 and np.mean(ious) > 0.96, ious


SHIPPED = default_model_path()


@pytest.mark.skipif(SHIPPED is None, reason="models/ ships no checkpoint here")
def test_model_file_carries_the_weights_and_settings_override_them(tmp_path: Path) -> None:
    carried = {"decision": "area-prior", "threshold": 0.4, "temporal_blend": 0.6, "support_warp": 0.0}
    path = rewrite_info(SHIPPED, tmp_path / "m.safetensors", {"trained": True, "settings": carried})
    loaded = Propagator.load(path, RunSettings.from_model(path, device="cpu"))
    assert loaded.settings.carried() == carried and loaded.fusion == (0.6, 0.0)
    assert Propagator.load(path).settings.carried() == carried  # settings None: the model's own
    plain = Propagator.load(path, RunSettings.from_model(path, device="cpu", temporal_blend=0.0, support_warp=0.2))
    assert (plain.settings.temporal_blend, plain.settings.support_warp, plain.settings.decision) == (0.0, 0.2,
                                                                                                   "area-prior")
    with pytest.raises(InputError, match=r"setting support_warp must be a number in \[0, 1\], got -0.1"):
        RunSettings.from_model(path, support_warp=-0.1)
    with pytest.raises(InputError, match=r"setting temporal_blend must be a number in \[0, 1\), got 1.0"):
        RunSettings.from_model(path, temporal_blend=1.0)


@pytest.mark.skipif(SHIPPED is None, reason="models/ ships no checkpoint here")
def test_cli_fusion_flags_become_the_runs_settings() -> None:
    from XRayVOSLib.cli import build_parser
    from XRayVOSLib.cli.settings_options import settings_from_args

    argv = ["evaluate", "--data", "d", "--temporal-blend", "0.3", "--support-warp", "0.1", "--decision", "threshold",
            "--threshold", "0.4"]
    settings = settings_from_args(build_parser(argv).parse_args(argv), method="flow")
    assert (settings.temporal_blend, settings.support_warp, settings.decision, settings.threshold) == (0.3, 0.1,
                                                                                                     "threshold", 0.4)
    assert settings.method == "flow"
    argv = ["evaluate", "--data", "d"]
    assert settings_from_args(build_parser(argv).parse_args(argv)) == RunSettings.from_model(SHIPPED)  # the model's
    argv = ["evaluate", "--data", "d", "--support-warp", "1.5"]
    with pytest.raises(InputError, match=r"setting support_warp must be a number in \[0, 1\], got 1.5"):
        settings_from_args(build_parser(argv).parse_args(argv))
    with pytest.raises(SystemExit):  # propagate runs the shipped pipeline: no research-only fusion flags
        build_parser(["propagate"]).parse_args(["propagate", "x.npy", "--support", "0:m.png", "--out", "o",
                                                "--temporal-blend", "0.3"])
