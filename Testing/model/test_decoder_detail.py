"""The decoder's sub-pixel detail layer: where its channels land, and that it learns."""

from __future__ import annotations

import pytest
import torch

from XRayVOSLib.model.network import LocalMatchingNetwork
from network_helpers import self_readout


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def probabilities_and_logits(net: LocalMatchingNetwork, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame read back from its own memory: (probs 1, K+1, H, W; object logits 1, K, H, W)."""
    g = torch.Generator().manual_seed(seed)
    q, probs = self_readout(net, g, 48, 64)
    with torch.no_grad():
        readout = torch.randn(1, 2, net.config.value_dim, 3, 4, generator=g)
        return probs, net.decoder(readout, q, (48, 64))


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


def test_detail_layer_receives_gradient() -> None:
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
