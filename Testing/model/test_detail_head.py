"""The sub-pixel detail head (layout, config versions, adding it to a trained model without changing it) and
building a training network of another stride from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from XRayVOSLib.model.checkpoint import load_checkpoint, save_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.loop import add_detail_head, build_network, transfer_to_stride


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def probabilities_and_logits(net: LocalMatchingNetwork, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame read back from its own memory: (probs 1, K+1, H, W; object logits 1, K, H, W)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 1, 48, 64, generator=g)
    masks = (torch.rand(1, 2, 48, 64, generator=g) > 0.7).float()
    with torch.no_grad():
        q = net.encode_query(image)
        v = net.encode_value(q, masks)
        probs = net.segment(q, q.key[:, None], v[:, None])[1]
        readout = torch.randn(1, 2, net.config.value_dim, 3, 4, generator=g)
        return probs, net.decoder(readout, q, (48, 64))


def test_version_1_configs_have_no_head_and_new_configs_do() -> None:
    old = ModelConfig.from_dict({"version": 1, "stride": 16})
    assert old.detail_head is False
    assert ModelConfig.from_dict({"version": 2}).detail_head is True
    assert ModelConfig().detail_head is True and ModelConfig().version >= 2
    assert LocalMatchingNetwork(old).decoder.detail is None


def test_detail_channels_land_on_their_sub_pixels() -> None:
    torch.manual_seed(0)
    net = LocalMatchingNetwork().eval()
    _, base = probabilities_and_logits(net)  # zero-initialised head: contributes nothing
    with torch.no_grad():
        net.decoder.detail.bias.copy_(torch.arange(16.0))
    _, shifted = probabilities_and_logits(net)
    delta = shifted - base  # 1, 2, 48, 64
    rows = torch.arange(48).view(-1, 1) % 4
    cols = torch.arange(64).view(1, -1) % 4
    expected = (4 * rows + cols).float().expand_as(delta)  # channel c -> pixel (c // 4, c % 4) of each cell
    torch.testing.assert_close(delta, expected, atol=1e-4, rtol=0)


def test_adding_the_head_to_a_trained_model_keeps_its_output(tmp_path: Path) -> None:
    torch.manual_seed(1)
    old = LocalMatchingNetwork(ModelConfig(detail_head=False)).eval()
    path = save_checkpoint(tmp_path / "v1.safetensors", old)
    upgraded = add_detail_head(old)
    assert upgraded.config.detail_head and upgraded.decoder.detail is not None
    for a, b in zip(probabilities_and_logits(old), probabilities_and_logits(upgraded.eval())):
        assert torch.equal(a, b)
    # Training from such a checkpoint adds the head; asking for none keeps the checkpoint as it is.
    net, info = build_network(TrainConfig(init=str(path)))
    assert net.config.detail_head and info["init"] == str(path)
    # The init's own history is not nested further: a model trained in stages keeps one level of it.
    staged = save_checkpoint(tmp_path / "staged.safetensors", old, info={"steps": 9, "init_info": {"steps": 1}})
    assert build_network(TrainConfig(init=str(staged)))[1]["init_info"] == {"steps": 9}
    assert not build_network(TrainConfig(init=str(path), detail_head=False))[0].config.detail_head
    # And the saved upgraded model round-trips with its head.
    net.decoder.detail.bias.data.fill_(0.5)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "v2.safetensors", net))
    assert loaded.config.detail_head and torch.equal(loaded.decoder.detail.bias, net.decoder.detail.bias)


def test_detail_head_receives_gradient() -> None:
    torch.manual_seed(2)
    net = LocalMatchingNetwork()
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 1, 32, 32, generator=g)
    masks = (torch.rand(1, 1, 32, 32, generator=g) > 0.5).float()
    q = net.encode_query(image)
    v = net.encode_value(q, masks)
    logits, _ = net.segment(q, q.key[:, None], v[:, None])
    target = (torch.rand(1, 32, 32, generator=g) > 0.5).long()
    torch.nn.functional.cross_entropy(logits, target).backward()
    assert net.decoder.detail.weight.grad is not None and net.decoder.detail.weight.grad.abs().sum() > 0


def test_training_init_of_another_stride_transfers_what_fits(tmp_path: Path, capsys) -> None:
    torch.manual_seed(4)
    source = LocalMatchingNetwork(ModelConfig(detail_head=False)).eval()
    path = save_checkpoint(tmp_path / "s16.safetensors", source)
    net, _ = build_network(TrainConfig(init=str(path), stride=8))
    assert net.stride == 8 and net.config.detail_head
    assert "stride 16 -> 8" in capsys.readouterr().out
    given, own = source.state_dict(), net.state_dict()
    for name in ("key_encoder.trunk.features.0.0.weight", "value_encoder.down.0.dw.weight", "decoder.pred.weight"):
        assert torch.equal(own[name], given[name]), name
    assert own["key_encoder.key_proj.weight"].shape != given["key_encoder.key_proj.weight"].shape
    # Without a stride in the config, the checkpoint's stride is kept (a site's fine-tune of a stride-8 model).
    assert build_network(TrainConfig(init=str(path)))[0].stride == 16
    assert build_network(TrainConfig())[0].stride == 16
    assert transfer_to_stride(net, 16, detail_head=False).config.detail_head  # never drops a trained head
