"""Memory bank policy (supports kept, oldest keyframes dropped, cap) and bounded memory in a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from XRayVOSLib.inference.memory import MemoryBank
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.matching import value_rows
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.settings import RunSettings
from cine_helpers import discs


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def entry(value: float, objects: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((4, 3, 5), float(value)), torch.full((objects, 6, 3, 5), float(value))


def test_bank_keeps_supports_and_drops_oldest_keyframes_first() -> None:
    bank = MemoryBank(max_keyframes=3)
    bank.add(0, *entry(0), is_support=True)
    bank.add(20, *entry(20), is_support=True)
    for t in range(1, 8):
        bank.add(t, *entry(t))
        assert len(bank) <= 2 + 3
    assert bank.frames == [0, 20, 5, 6, 7]
    keys, values = bank.tensors()
    assert keys.shape == (1, 5, 4, 3, 5) and values.shape == (1, 5, 2, 6, 3, 5)
    # The stacked tensors hold the entries in bank order (the cache follows every change).
    assert [float(k[0, 0, 0]) for k in keys[0]] == [0, 20, 5, 6, 7]
    bank.add(8, *entry(8))
    assert [float(k[0, 0, 0]) for k in bank.tensors()[0][0]] == [0, 20, 6, 7, 8]
    # The cached value rows (N*M rows of K*Cv) follow the same changes: row n*M holds entry n's values.
    rows = bank.value_rows()
    assert rows.shape == (1, 5 * 3 * 5, 2 * 6) and rows.is_contiguous()
    assert [float(rows[0, n * 15, 0]) for n in range(5)] == [0, 20, 6, 7, 8]
    torch.testing.assert_close(rows, value_rows(bank.tensors()[1]))
    bank.clear_keyframes()
    assert bank.frames == [0, 20]
    assert bank.tensors()[0].shape[1] == 2


def test_bank_nbytes_counts_stored_maps_and_supports_are_never_dropped() -> None:
    bank = MemoryBank(max_keyframes=1)
    for t in range(3):
        bank.add(t, *entry(t), is_support=True)
    per_entry = (4 * 3 * 5 + 2 * 6 * 3 * 5) * 4
    assert bank.nbytes() == 3 * per_entry
    for t in range(3, 10):
        bank.add(t, *entry(t))
    assert bank.frames == [0, 1, 2, 9]
    assert bank.nbytes() == 4 * per_entry


def test_empty_bank_refuses_to_read() -> None:
    with pytest.raises(RuntimeError, match="memory is empty"):
        MemoryBank().tensors()


def test_long_run_memory_stays_capped(monkeypatch) -> None:
    """memory_every=1 adds a keyframe per frame; the bank must stop growing at the pass's support + cap (a pass
    reads only its own support: propagation/pipeline.py)."""
    frames, labels = discs(8)
    supports = {0: labels[0], 7: labels[7]}
    lengths, sizes, resets = [], [], []
    real_add, real_clear = MemoryBank.add, MemoryBank.clear_keyframes

    def add(self: MemoryBank, *args, **kwargs) -> None:
        real_add(self, *args, **kwargs)
        lengths.append(len(self))
        sizes.append(self.nbytes())

    def clear(self: MemoryBank) -> None:
        real_clear(self)
        resets.append(len(lengths))

    monkeypatch.setattr(MemoryBank, "add", add)
    monkeypatch.setattr(MemoryBank, "clear_keyframes", clear)
    torch.manual_seed(0)
    settings = RunSettings(device="cpu", memory_every=1, max_keyframes=3, temporal_blend=0.0, support_warp=0.0)
    prop = Propagator.load(LocalMatchingNetwork().eval(), settings, accelerate=False)
    out = prop.propagate(frames, supports)
    assert out.shape == frames.shape
    # Two passes of 6 frames between the supports, each starting from its support and adding a keyframe per frame.
    assert len(lengths) == 2 + 2 * 6 and len(resets) == 2
    assert max(lengths) == 1 + 3
    assert all(n <= 4 for n in lengths)
    # Past the cap, the bytes held are flat within each pass (the second pass's own support is added first).
    first_pass = sizes[resets[0] : resets[1] - 1]
    assert first_pass[3:] == [first_pass[2]] * (len(first_pass) - 3)
    assert first_pass[2] == sizes[-1]


def test_engine_memory_interval_controls_keyframes(monkeypatch) -> None:
    """memory_every=R adds frames R, 2R, ... of each pass (counted from the support)."""
    frames, labels = discs(8)
    added: list[tuple[int, bool]] = []
    real_add = MemoryBank.add
    monkeypatch.setattr(MemoryBank, "add", lambda self, t, k, v, is_support=False: (
        added.append((t, is_support)), real_add(self, t, k, v, is_support))[-1])
    torch.manual_seed(0)
    prop = Propagator.load(LocalMatchingNetwork().eval(), RunSettings(device="cpu", memory_every=3), accelerate=False)
    prop.propagate(frames, {2: labels[2]})
    # Backward pass 1, 0 (no third frame); forward pass 3..7 adds its 3rd frame (5) and no 6th.
    assert added == [(2, True), (5, False)]


def test_fusion_changes_the_output_but_never_the_memory(monkeypatch) -> None:
    """The memory keeps the network's own probabilities (propagation/fusion.py): the keyframes a fused run
    stores are the ones an unfused run stores, while the labels it returns differ."""
    frames, labels = discs(7)
    stored: list[torch.Tensor] = []
    real_add = MemoryBank.add
    monkeypatch.setattr(MemoryBank, "add", lambda self, t, k, v, is_support=False: (
        stored.append(v.clone()), real_add(self, t, k, v, is_support))[-1])
    torch.manual_seed(0)
    net = LocalMatchingNetwork().eval()
    runs = {}
    for fusion in ((0.0, 0.0), (0.85, 0.15)):
        stored.clear()
        settings = RunSettings(device="cpu", memory_every=1, decision="threshold", temporal_blend=fusion[0],
                               support_warp=fusion[1])
        out = Propagator.load(net, settings, accelerate=False).propagate(frames, {0: labels[0]})
        runs[fusion] = (out, list(stored))
    (plain, plain_memory), (fused, fused_memory) = runs[(0.0, 0.0)], runs[(0.85, 0.15)]
    assert len(plain_memory) == len(fused_memory) == 7  # the support and one keyframe per frame
    for a, b in zip(plain_memory, fused_memory):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not np.array_equal(plain, fused)
