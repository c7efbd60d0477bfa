"""Faster CPU inference: trace the network's pieces per input size and let TorchScript fuse them.

`torch.jit.optimize_for_inference` folds the frozen BatchNorms into the convolutions and runs them
through oneDNN; on the 2-core dev machine the MobileNetV2 trunk at 512x512 drops from ~150 ms to ~30 ms.
Tracing and optimising cost several seconds per input size, so by default ("auto") the engine only turns
it on for runs long enough to repay it. If tracing fails (an exotic torch build), we fall back to eager
mode with a warning: same results, slower.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from XRayVOSLib.model.network import LocalMatchingNetwork, QueryFeatures


class _KeyPart(nn.Module):
    def __init__(self, net: LocalMatchingNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, image01: torch.Tensor):  # -> key, feature, image, *skips
        q = self.net.encode_query(image01)
        return (q.key, q.feature, q.image, *q.skips)


class _ValuePart(nn.Module):
    def __init__(self, net: LocalMatchingNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, feature: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.net.value_encoder(image, feature, masks)


class _DecoderPart(nn.Module):
    def __init__(self, net: LocalMatchingNetwork, size: tuple[int, int]) -> None:
        super().__init__()
        self.net, self.size = net, size

    def forward(self, readout: torch.Tensor, feature: torch.Tensor, image: torch.Tensor, *skips: torch.Tensor):
        q = QueryFeatures(key=feature, feature=feature, skips=list(skips), image=image)
        return self.net.decoder(readout, q, self.size)


class AcceleratedNetwork:
    """encode_query / encode_value / decode with per-shape traced, optimised modules (CPU only)."""

    def __init__(self, net: LocalMatchingNetwork, enabled: bool = True) -> None:
        self.net = net
        self.enabled = enabled
        self.broken = False  # tracing failed once: stay eager
        self._cache: dict[tuple, Callable] = {}

    def _get(self, name: str, module: nn.Module, example: tuple[torch.Tensor, ...]) -> Callable:
        use = self.enabled and not self.broken
        shape_key = (name, use) + tuple(tuple(t.shape) for t in example)
        if shape_key not in self._cache:
            fn: Callable = module
            if use:
                try:
                    with torch.no_grad(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        # check_trace re-runs the model twice to compare (about half the warm-up);
                        # Testing/test_checkpoint.py checks traced against eager outputs instead.
                        traced = torch.jit.trace(module.eval(), example, check_trace=False)
                        fn = torch.jit.optimize_for_inference(traced)
                        fn(*example)  # first call compiles; fail here rather than mid-run
                except Exception as exc:  # pragma: no cover - depends on the torch build
                    warnings.warn(f"TorchScript acceleration unavailable ({exc}); running eager (slower)")
                    self.broken, fn = True, module
            self._cache[shape_key] = fn
        return self._cache[shape_key]

    def encode_query(self, image01: torch.Tensor) -> QueryFeatures:
        key, feature, image, *skips = self._get("key", _KeyPart(self.net), (image01,))(image01)
        return QueryFeatures(key=key, feature=feature, skips=list(skips), image=image)

    def encode_value(self, q: QueryFeatures, masks: torch.Tensor) -> torch.Tensor:
        args = (q.image, q.feature, masks)
        return self._get("value", _ValuePart(self.net), args)(*args)

    def decode(self, readout: torch.Tensor, q: QueryFeatures) -> torch.Tensor:
        size = tuple(q.image.shape[-2:])
        args = (readout, q.feature, q.image, *q.skips)
        return self._get(f"decoder{size}", _DecoderPart(self.net, size), args)(*args)
