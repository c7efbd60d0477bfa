"""Helpers of the network tests (Testing/model/ is on sys.path when pytest imports its test modules)."""

from __future__ import annotations

import torch

from XRayVOSLib.model.network import LocalMatchingNetwork, QueryFeatures


def self_readout(net: LocalMatchingNetwork, g: torch.Generator, height: int,
                 width: int) -> tuple[QueryFeatures, torch.Tensor]:
    """A random frame and two random masks, encoded, read back from that one-frame memory and decoded:
    (the query features, probs 1, K+1, H, W)."""
    image = torch.rand(1, 1, height, width, generator=g)
    masks = (torch.rand(1, 2, height, width, generator=g) > 0.7).float()
    with torch.no_grad():
        q = net.encode_query(image)
        v = net.encode_value(q, masks)
        return q, net.segment(q, q.key[:, None], v[:, None])[1]
