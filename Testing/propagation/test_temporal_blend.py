"""Temporal fusion (inference/fusion.py): the previous result and the support mask, warped by optical flow,
blended into each frame; read from the model file, overridable, validated in Python, the CLI and the worker."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from XRayVOSLib.errors import InputError
from XRayVOSLib.inference.engine import EngineSettings
from XRayVOSLib.inference.fusion import PassFusion
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.checkpoint import rewrite_info
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.synth import generate_cine

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def untrained(blend: float, anchor: float = 0.0) -> Propagator:
    torch.manual_seed(3)
    net = LocalMatchingNetwork(ModelConfig())
    settings = EngineSettings(temporal_blend=blend, support_warp=anchor)
    return Propagator(net, {"trained": False}, torch.device("cpu"), settings, accelerate=False)


def test_fusion_follows_the_motion_and_anchors_to_the_support() -> None:
    support = torch.zeros(2, 6, 6)
    support[1, :, 2] = 1.0  # an object on column 2
    support[0] = 1 - support[1]
    shift = np.zeros((6, 6, 2), np.float32)
    shift[..., 0] = -1.0  # the current frame at x looks like the previous one at x - 1: moved right
    frame = np.zeros((6, 6), np.float32)
    probs = torch.full((2, 6, 6), 0.5)
    chained = PassFusion(support, frame, blend=0.8, anchor=0.0, flow=lambda cur, prev: 1 / 0)  # flow unused
    fused = chained(probs, frame, shift)
    np.testing.assert_allclose(fused[1, :, 3], 0.1 + 0.8)  # carried onto column 3
    np.testing.assert_allclose(fused[1, :, 2], 0.1)
    np.testing.assert_allclose(fused.sum(0), 1.0, atol=1e-6)
    fused = chained(probs, frame, shift)  # the carried result moves on: column 4
    np.testing.assert_allclose(fused[1, :, 4], 0.1 + 0.8 * 0.9, atol=1e-6)

    anchored = PassFusion(support, frame, blend=0.0, anchor=0.5, flow=lambda cur, src: shift)
    for _ in range(2):  # straight from the support each time: no drift
        fused = anchored(probs, frame, None)
        np.testing.assert_allclose(fused[1, :, 3], 0.25 + 0.5)
        np.testing.assert_allclose(fused[1, :, 4], 0.25)


def test_still_cine_keeps_the_support_mask_that_a_random_network_loses() -> None:
    cine = generate_cine(seed=8, num_frames=5, size=64)
    frames = np.repeat(cine.frames[:1], 5, axis=0)  # no motion: DIS flow is zero
    supports = {0: cine.labels[0]}
    for blend, anchor in ((0.9, 0.0), (0.0, 0.9)):
        kept = untrained(blend, anchor).propagate(frames, supports)
        for t in range(5):
            np.testing.assert_array_equal(kept[t], cine.labels[0])
    assert not all(np.array_equal(m, cine.labels[0]) for m in untrained(0.0).propagate(frames, supports)[1:])


def test_model_file_carries_the_setting_and_arguments_override_it(tmp_path) -> None:
    path = rewrite_info(default_model_path(), tmp_path / "m.safetensors",
                        {"object_threshold": 0.4, "temporal_blend": 0.6, "area_prior": True})
    loaded = Propagator.load(path, device="cpu")
    assert (loaded.settings.temporal_blend, loaded.settings.support_warp, loaded.settings.area_prior) == (0.6, 0.0, True)
    plain = Propagator.load(path, device="cpu", temporal_blend=0.0, support_warp=0.2, area_prior=False)
    assert (plain.settings.temporal_blend, plain.settings.support_warp, plain.settings.area_prior) == (0.0, 0.2, False)
    with pytest.raises(InputError, match=r"support_warp must lie in \[0, 1\], got -0.1"):
        Propagator.load(path, device="cpu", support_warp=-0.1)
    assert not Propagator.load(path, device="cpu", object_threshold=0.3).settings.area_prior  # a threshold given acts
    assert Propagator.load(path, device="cpu", object_threshold=0.3, area_prior=True).settings.area_prior
    with pytest.raises(InputError, match=r"temporal_blend must lie in \[0, 1\), got 1.0"):
        Propagator.load(path, device="cpu", temporal_blend=1.0)


def test_cli_and_worker_pass_and_check_the_options(tmp_path) -> None:
    from XRayVOSLib.cli import build_parser
    from XRayVOSLib.cli.network_options import network_kwargs
    from XRayVOSLib.worker import load_job

    argv = ["evaluate", "--data", "d", "--temporal-blend", "0.3", "--support-warp", "0.1", "--no-area-prior"]
    kwargs = network_kwargs(build_parser(argv).parse_args(argv))
    assert (kwargs["temporal_blend"], kwargs["support_warp"], kwargs["area_prior"]) == (0.3, 0.1, False)
    argv = ["evaluate", "--data", "d"]
    assert network_kwargs(build_parser(argv).parse_args(argv))["area_prior"] is None  # the model decides
    job = tmp_path / "job.json"
    for bad, message in (({"temporal_blend": 1.5}, "temporal_blend must be null or a number in [0, 1)"),
                         ({"support_warp": True}, "support_warp must be null or a number in [0, 1]"),
                         ({"area_prior": "on"}, "area_prior must be null, true or false")):
        job.write_text(json.dumps({"frames": "f.npy", "supports": "s.npz", "output": "o.npy", **bad}))
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            load_job(job)
    job.write_text(json.dumps({"frames": "f.npy", "supports": "s.npz", "output": "o.npy",
                               "temporal_blend": 0.5, "support_warp": 0.25, "area_prior": True}))
    assert [load_job(job)[k] for k in ("temporal_blend", "support_warp", "area_prior")] == [0.5, 0.25, True]
