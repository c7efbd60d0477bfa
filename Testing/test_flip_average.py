"""Test-time flip averaging (EngineSettings.flip_average): the mean of the plain run and of the mirrored
cine's run flipped back, progress over both streams, supports kept exact, and the CLI flag."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from XRayVOSLib.inference.engine import EngineSettings
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.synth import generate_cine

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def propagator(flip_average: bool) -> Propagator:
    torch.manual_seed(2)
    net = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True))
    torch.nn.init.normal_(net.decoder.refine.out.weight, std=0.3)  # a refiner that acts, as after training
    return Propagator(net, {"trained": False}, torch.device("cpu"), EngineSettings(flip_average=flip_average),
                      accelerate=False)


def test_flip_average_is_the_mean_of_the_plain_and_the_mirrored_run() -> None:
    cine = generate_cine(seed=5, num_frames=6, size=64)
    frames, supports = cine.frames[:, :, :60], {0: cine.labels[0, :, :60], 5: cine.labels[5, :, :60]}  # not square
    plain = {t: p for t, p, _ in propagator(False).iter_probabilities(frames, supports)}
    mirrored = {t: p[..., ::-1] for t, p, _ in propagator(False).iter_probabilities(
        np.ascontiguousarray(frames[..., ::-1]), {t: np.ascontiguousarray(m[..., ::-1]) for t, m in supports.items()})}
    both = {t: p for t, p, _ in propagator(True).iter_probabilities(frames, supports)}
    assert sorted(both) == sorted(plain) == [1, 2, 3, 4]
    assert any(not np.allclose(plain[t], mirrored[t], atol=1e-3) for t in plain)  # the mirror sees another image
    for t in both:
        np.testing.assert_allclose(both[t], (plain[t] + mirrored[t]) / 2, atol=1e-5)
        np.testing.assert_allclose(both[t].sum(0), 1.0, atol=0.01)  # passes between supports wait as uint8


def test_flip_average_reports_both_streams_and_keeps_supports() -> None:
    cine = generate_cine(seed=6, num_frames=5, size=64)
    seen: list[tuple[int, int]] = []
    labels = propagator(True).propagate(cine.frames, {2: cine.labels[2]}, progress=lambda d, n: seen.append((d, n)))
    np.testing.assert_array_equal(labels[2], cine.labels[2])
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_cli_flag_reaches_the_engine() -> None:
    from XRayVOSLib.methods import make_method

    method = make_method("local", device="cpu", flip_average=True)
    assert method.settings.flip_average and not dataclasses.replace(method.settings, flip_average=False).flip_average
