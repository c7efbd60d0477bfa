"""Faster CPU inference: trace the key encoder per input size; TorchScript fuses it.

`torch.jit.optimize_for_inference` folds the frozen BatchNorms into the convolutions and runs them
through oneDNN; on the 2-core dev machine the MobileNetV2 trunk at 512x512 drops from ~100-120 ms to
~30-40 ms. The value encoder and the decoder stay eager: traced, they were no faster (decoder 17 ms
either way, value encoder 22 ms) and their tracing added ~0.75 s to the warm-up (one-off measurement
at 512x512, torch 2.13). Tracing and optimising the trunk costs ~0.9 s per input size, so by default
("auto") the engine only turns it on for runs long enough to repay it.
If tracing fails (an exotic torch build), we fall back to eager mode with a warning: same results, slower.
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


class AcceleratedNetwork:
    """encode_query through per-shape traced, optimised modules (CPU only); the rest eager."""

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
        return self.net.encode_value(q, masks)

    def decode(self, readout: torch.Tensor, q: QueryFeatures) -> torch.Tensor:
        return self.net.decoder(readout, q, tuple(q.image.shape[-2:]))
