"""Temporal fusion (EngineSettings.temporal_blend): the previous result, warped by optical flow, blended
into each frame; read from the model file, overridable, validated in Python, the CLI and the worker."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from XRayVOSLib.errors import InputError
from XRayVOSLib.inference.engine import EngineSettings, InferenceEngine
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.checkpoint import rewrite_info
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.synth import generate_cine

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def untrained(blend: float) -> Propagator:
    torch.manual_seed(3)
    net = LocalMatchingNetwork(ModelConfig())
    return Propagator(net, {"trained": False}, torch.device("cpu"), EngineSettings(temporal_blend=blend),
                      accelerate=False)


def test_fused_result_follows_the_motion() -> None:
    carried = torch.zeros(2, 6, 6)
    carried[1, :, 2] = 1.0  # an object on column 2
    carried[0] = 1 - carried[1]
    flow = np.zeros((6, 6, 2), np.float32)
    flow[..., 0] = -1.0  # the current frame at x looks like the previous one at x - 1: moved right
    probs = torch.full((2, 6, 6), 0.5)
    fused = InferenceEngine._fused(probs, carried, flow, 0.8)
    np.testing.assert_allclose(fused[1, :, 3], 0.1 + 0.8)  # carried onto column 3
    np.testing.assert_allclose(fused[1, :, 2], 0.1)
    np.testing.assert_allclose(fused.sum(0), 1.0, atol=1e-6)


def test_still_cine_keeps_the_support_mask_that_a_random_network_loses() -> None:
    cine = generate_cine(seed=8, num_frames=5, size=64)
    frames = np.repeat(cine.frames[:1], 5, axis=0)  # no motion: DIS flow is zero
    supports = {0: cine.labels[0]}
    kept = untrained(0.9).propagate(frames, supports)
    for t in range(5):
        np.testing.assert_array_equal(kept[t], cine.labels[0])
    assert not all(np.array_equal(m, cine.labels[0]) for m in untrained(0.0).propagate(frames, supports)[1:])


def test_model_file_carries_the_setting_and_arguments_override_it(tmp_path) -> None:
    path = rewrite_info(default_model_path(), tmp_path / "m.safetensors",
                        {"object_threshold": 0.4, "temporal_blend": 0.6, "area_prior": True})
    loaded = Propagator.load(path, device="cpu")
    assert (loaded.settings.temporal_blend, loaded.settings.area_prior) == (0.6, True)
    plain = Propagator.load(path, device="cpu", temporal_blend=0.0, area_prior=False)
    assert (plain.settings.temporal_blend, plain.settings.area_prior) == (0.0, False)
    with pytest.raises(InputError, match=r"temporal_blend must lie in \[0, 1\), got 1.0"):
        Propagator.load(path, device="cpu", temporal_blend=1.0)


def test_cli_and_worker_pass_and_check_the_options(tmp_path) -> None:
    from XRayVOSLib.cli import build_parser
    from XRayVOSLib.cli.network_options import network_kwargs
    from XRayVOSLib.worker import load_job

    argv = ["evaluate", "--data", "d", "--temporal-blend", "0.3", "--no-area-prior"]
    kwargs = network_kwargs(build_parser(argv).parse_args(argv))
    assert (kwargs["temporal_blend"], kwargs["area_prior"]) == (0.3, False)
    argv = ["evaluate", "--data", "d"]
    assert network_kwargs(build_parser(argv).parse_args(argv))["area_prior"] is None  # the model decides
    job = tmp_path / "job.json"
    for bad, message in (({"temporal_blend": 1.5}, "temporal_blend must be null or a number in [0, 1)"),
                         ({"area_prior": "on"}, "area_prior must be null, true or false")):
        job.write_text(json.dumps({"frames": "f.npy", "supports": "s.npz", "output": "o.npy", **bad}))
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            load_job(job)
    job.write_text(json.dumps({"frames": "f.npy", "supports": "s.npz", "output": "o.npy",
                               "temporal_blend": 0.5, "area_prior": True}))
    assert (load_job(job)["temporal_blend"], load_job(job)["area_prior"]) == (0.5, True)
