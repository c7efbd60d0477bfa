"""The flow-aligned refiner prior (model config `prior_warp`): an exact warp, real DIS flow that lines a
moved wire up again, the engine and the clip step feeding the warped prior, and the config rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.inference.engine import EngineSettings
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.inference.warp import FlowEstimator, warp_clip_prior, warp_prior
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.synth import generate_cine
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.loop import build_network
from XRayVOSLib.training.step import ClipStep

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def moved_pair(shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic frame and its wire mask, and both shifted by (dy, dx): previous, current."""
    cine = generate_cine(seed=7, num_frames=2, size=96)
    frame, mask = cine.frames[0].astype(np.float32), (cine.labels[0] > 0).astype(np.float32)
    frame = (frame - frame.min()) / (frame.max() - frame.min())
    return frame, mask, np.roll(frame, shift, (0, 1)), np.roll(mask, shift, (0, 1))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def test_warp_by_a_constant_flow_is_an_exact_shift() -> None:
    prior = torch.zeros(1, 2, 20, 30)
    prior[0, 0, 5:8, 10:12] = 1.0
    prior[0, 1, 12, 3] = 0.5
    flow = torch.zeros(1, 20, 30, 2)
    flow[..., 0], flow[..., 1] = -2.0, 3.0  # each pixel pulls its value from (x - 2, y + 3)
    warped = warp_prior(prior, flow)
    expected = torch.zeros_like(prior)
    expected[0, 0, 2:5, 12:14] = 1.0  # content at y moves to y - 3, at x to x + 2
    expected[0, 1, 9, 5] = 0.5
    torch.testing.assert_close(warped, expected)


def test_dis_flow_lines_a_moved_wire_up_again() -> None:
    previous, mask, current, moved = moved_pair((2, -3))
    flow = FlowEstimator()(current, previous)
    warped = warp_prior(torch.from_numpy(mask)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy() > 0.5
    assert iou(mask > 0, moved > 0) < 0.3  # unaligned, the thin objects barely overlap
    assert iou(warped, moved > 0) > 0.7  # aligned by the estimated flow


def test_clip_step_warps_the_prior_it_feeds_the_refiner() -> None:
    previous, mask, current, moved = moved_pair((0, 3))
    torch.manual_seed(0)
    config = ModelConfig(refine_head=True, refine_prior=True, prior_warp=True)
    net = LocalMatchingNetwork(config).train()
    seen: list[torch.Tensor] = []
    handle = net.decoder.refine.register_forward_hook(lambda m, args, out: seen.append(args[3].detach().clone()))
    labels = torch.from_numpy(np.stack([mask, moved, moved])).long()[None]  # 1, 3, H, W
    frames = torch.from_numpy(np.stack([previous, current, current]))[None, :, None]  # 1, 3, 1, H, W
    batch = {"frames": frames, "labels": labels, "num_objects": torch.tensor([1])}
    try:
        ClipStep(net, TrainConfig(refine_head=True, refine_prior=True, prior_warp=True, size=96))(batch, step=0)
    finally:
        handle.remove()
    # Frame 1's prior is frame 0's mask moved onto frame 1: it overlaps frame 1's mask, the raw one does not.
    assert iou(seen[0][0, 0].numpy() > 0.5, moved > 0) > 0.7 > iou(mask > 0, moved > 0)
    direct = warp_clip_prior(torch.from_numpy(mask)[None, None], frames[:, 1], frames[:, 0], FlowEstimator())
    torch.testing.assert_close(seen[0][:, 0], direct[:, 0])


def test_engine_feeds_the_warped_support_mask() -> None:
    previous, mask, current, moved = moved_pair((3, 0))
    torch.manual_seed(1)
    net = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True, prior_warp=True)).eval()
    propagator = Propagator(net, {"trained": False}, torch.device("cpu"), EngineSettings(), accelerate=False)
    seen: list[torch.Tensor] = []
    handle = net.decoder.refine.register_forward_hook(lambda m, args, out: seen.append(args[3].clone()))
    try:
        propagator.propagate(np.stack([previous, current]), {0: mask.astype(np.uint8)})
    finally:
        handle.remove()
    fed = seen[0][0, 0, :96, :96].numpy() > 0.5
    assert iou(fed, moved > 0) > 0.7 > iou(mask > 0, moved > 0)


def test_prior_warp_rules_and_adding_it_to_a_trained_model(tmp_path) -> None:
    from XRayVOSLib.model.checkpoint import save_checkpoint

    assert ModelConfig.from_dict({"version": 4, "refine_head": True, "refine_prior": True}).prior_warp is False
    with pytest.raises(ModelError, match="prior_warp needs refine_prior"):
        ModelConfig(refine_head=True, prior_warp=True)
    with pytest.raises(InputError, match="prior_warp needs refine_prior"):
        TrainConfig(refine_head=True, prior_warp=True)
    old = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True))
    path = save_checkpoint(tmp_path / "v4.safetensors", old)
    net, _ = build_network(TrainConfig(init=str(path), refine_head=True, refine_prior=True, prior_warp=True))
    assert net.config.prior_warp
    for name, tensor in old.state_dict().items():
        assert torch.equal(tensor, net.state_dict()[name])
