"""The refiner's dilated blocks (model config v5): none in older checkpoints, added to a trained model without
changing its output, trained through the clip step, wider in reach, and named when a resume does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.inference.accelerate import AcceleratedNetwork
from XRayVOSLib.model.checkpoint import load_checkpoint, save_checkpoint
from XRayVOSLib.model.config import CONFIG_VERSION, ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.loop import Trainer, add_refine_blocks, build_network
from XRayVOSLib.training.step import ClipStep

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def decode(net: LocalMatchingNetwork, image: torch.Tensor, readout: torch.Tensor,
           prior: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.decoder(readout, net.encode_query(image), tuple(image.shape[-2:]), prior)


def test_configs_before_v5_have_no_blocks_and_blocks_need_the_refiner() -> None:
    assert ModelConfig.from_dict({"version": 4, "refine_head": True, "refine_prior": True}).refine_blocks == 0
    assert ModelConfig.from_dict({"version": 5, "refine_head": True, "refine_blocks": 3}).refine_blocks == 3
    with pytest.raises(ModelError, match="refine_blocks"):
        ModelConfig(refine_blocks=2)
    with pytest.raises(ModelError, match="refine_blocks"):
        ModelConfig(refine_head=True, refine_blocks=-1)
    with pytest.raises(InputError, match="refine_blocks"):
        TrainConfig(refine_blocks=2)


def test_adding_blocks_keeps_a_trained_refiners_output_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True)).eval()
    torch.nn.init.normal_(old.decoder.refine.out.weight, std=0.5)
    torch.nn.init.normal_(old.decoder.refine.prior_conv.weight, std=0.5)
    image, prior = torch.rand(1, 1, 64, 64), torch.rand(1, 2, 64, 64)
    readout = torch.randn(1, 2, old.config.value_dim, 4, 4)
    upgraded = add_refine_blocks(old, 3).eval()
    assert [b.conv1.dilation[0] for b in upgraded.decoder.refine.blocks] == [2, 4, 8]
    assert torch.equal(decode(old, image, readout, prior), decode(upgraded, image, readout, prior))
    # From a v4 checkpoint, a training config asking for blocks adds them, and the result round-trips as v5.
    path = save_checkpoint(tmp_path / "v4.safetensors", old)
    net, _ = build_network(TrainConfig(init=str(path), refine_head=True, refine_prior=True, refine_blocks=2))
    assert net.config.refine_blocks == 2 and net.config.version == CONFIG_VERSION
    net.decoder.refine.blocks[1].conv2.bias.data.fill_(0.25)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "v5.safetensors", net))
    assert loaded.config.refine_blocks == 2
    assert torch.equal(loaded.decoder.refine.blocks[1].conv2.bias, net.decoder.refine.blocks[1].conv2.bias)


def test_blocks_widen_the_refiners_reach_and_trace() -> None:
    torch.manual_seed(1)
    narrow = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True)).eval()
    torch.nn.init.normal_(narrow.decoder.refine.out.weight, std=0.5)
    torch.nn.init.normal_(narrow.decoder.refine.prior_conv.weight, std=0.5)
    wide = add_refine_blocks(narrow, 3).eval()
    for block in wide.decoder.refine.blocks:
        torch.nn.init.normal_(block.conv2.weight, std=0.3)
    image, readout = torch.rand(1, 1, 96, 96), torch.randn(1, 1, narrow.config.value_dim, 6, 6)
    prior = torch.zeros(1, 1, 96, 96)
    poked = prior.clone()
    poked[0, 0, 48, 48] = 1.0

    def reach(net: LocalMatchingNetwork) -> int:
        moved = (decode(net, image, readout, poked) - decode(net, image, readout, prior)).abs() > 1e-6
        rows, cols = torch.nonzero(moved[0, 0], as_tuple=True)
        return int(max((rows - 48).abs().max(), (cols - 48).abs().max()))

    assert reach(narrow) <= 9 < 20 < reach(wide)  # dilations 2, 4, 8 at stride 2 reach tens of pixels
    accelerated = AcceleratedNetwork(wide)
    traced = accelerated.decode(readout, accelerated.encode_query(image), poked)
    torch.testing.assert_close(traced, decode(wide, image, readout, poked), atol=1e-4, rtol=1e-4)


def test_clip_step_trains_the_blocks() -> None:
    torch.manual_seed(3)
    config = TrainConfig(refine_head=True, refine_prior=True, refine_blocks=2, size=32)
    net = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True, refine_blocks=2)).train()
    torch.nn.init.normal_(net.decoder.refine.out.weight, std=0.1)  # the zero init passes no gradient back
    labels = torch.zeros(2, 3, 32, 32, dtype=torch.long)
    labels[:, :, 8:20, 10:14] = 1
    labels[:, :, 20:28, 18:30] = 2
    batch = {"frames": torch.rand(2, 3, 1, 32, 32), "labels": labels, "num_objects": torch.tensor([2, 2])}
    losses = ClipStep(net, config)(batch, step=0)
    sum(v for k, v in losses.items() if k.startswith("ce")).backward()
    assert all(b.conv2.weight.grad.abs().sum() > 0 for b in net.decoder.refine.blocks)


def test_resuming_with_other_blocks_names_the_difference(tmp_path: Path) -> None:
    common = {"data": "synthetic", "size": 32, "batch_size": 1, "steps": 1, "refine_head": True,
              "out_dir": str(tmp_path / "run"), "device": "cpu", "num_workers": 0, "synth_frames": 6,
              "synthetic_length": 4, "save_every": 1}
    first = Trainer(TrainConfig.from_dict({**common, "refine_blocks": 1}))
    first.save()
    assert Trainer(TrainConfig.from_dict({**common, "refine_blocks": 1})).resume()  # the same network fits
    with pytest.raises(InputError, match="refine_blocks: saved 1, this config 2"):
        Trainer(TrainConfig.from_dict({**common, "refine_blocks": 2})).resume()
