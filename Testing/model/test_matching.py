"""Local matching: windows, reference points, local == global at full window, sparse readout paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model import matching
from XRayVOSLib.model.matching import (
    gather_windows,
    global_affinity,
    l2_similarity,
    local_affinity,
    memory_readout,
    reference_points,
    sparse_readout,
    value_rows,
    window_indices,
)
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.settings import RunSettings


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def unfold_window(feature_map: torch.Tensor, y0: int, x0: int, k: int) -> torch.Tensor:
    """The k x k window with top-left (y0, x0), read by F.unfold: C, k*k."""
    c, h, w = feature_map.shape
    cols = F.unfold(feature_map[None], kernel_size=k)  # 1, C*k*k, (h-k+1)*(w-k+1)
    return cols[0, :, y0 * (w - k + 1) + x0].view(c, k * k)


@pytest.mark.parametrize("k", [3, 5])
def test_windows_equal_unfold_at_interior_points(k: int) -> None:
    torch.manual_seed(0)
    fmap = torch.randn(4, 9, 11)
    h, w = fmap.shape[1:]
    points = [(y, x) for y in range(k // 2, h - k // 2) for x in range(k // 2, w - k // 2)]
    ref = torch.tensor([y * w + x for y, x in points])
    got = gather_windows(fmap, ref, k)  # C, P, k*k
    assert got.shape == (4, len(points), k * k)
    for p, (y, x) in enumerate(points):
        torch.testing.assert_close(got[:, p], unfold_window(fmap, y - k // 2, x - k // 2, k), rtol=0, atol=0)


def test_windows_at_borders_are_shifted_inside_the_map() -> None:
    torch.manual_seed(1)
    fmap = torch.randn(2, 7, 8)
    h, w, k = 7, 8, 5
    corners = {(0, 0): (0, 0), (h - 1, w - 1): (h - k, w - k), (0, w - 1): (0, w - k), (3, 0): (1, 0)}
    ref = torch.tensor([y * w + x for y, x in corners])
    got = gather_windows(fmap, ref, k)
    for p, (y0, x0) in enumerate(corners.values()):
        torch.testing.assert_close(got[:, p], unfold_window(fmap, y0, x0, k), rtol=0, atol=0)
    # A window larger than the map covers every position exactly once, whatever the reference point.
    idx = window_indices(torch.arange(h * w), h, w, window=15)
    assert idx.shape == (h * w, h * w)
    assert torch.equal(idx.sort(dim=-1).values, torch.arange(h * w).expand(h * w, -1))


def test_reference_point_finds_a_displaced_match() -> None:
    torch.manual_seed(2)
    h, w, ck = 10, 12, 8
    mem = torch.randn(1, 1, ck, h, w) * 0.1
    query = torch.randn(1, ck, h, w) * 0.1
    distinctive = torch.full((ck,), 3.0)
    query[0, :, 2, 3] = distinctive
    mem[0, 0, :, 7, 9] = distinctive  # the object moved by (+5, +6) grid cells
    weights, idx = local_affinity(l2_similarity(mem, query), h, w, window=3)
    p = 2 * w + 3
    expected = window_indices(torch.tensor(7 * w + 9), h, w, 3)
    assert torch.equal(idx[0, p].sort().values, expected.sort().values)  # window centred on (7, 9)
    assert idx[0, p, weights[0, p].argmax()] == 7 * w + 9
    assert weights[0, p].max() > 0.99


def test_reference_points_fast_path_matches_torch_argmax_including_ties() -> None:
    torch.manual_seed(4)
    sim = torch.randn(1, 50, 3, 40).round(decimals=1)  # rounding makes many exact ties
    sim[0, 0, 0] = 1.0  # a whole row tied: the first position wins
    fast = reference_points(sim)  # CPU float32 without grad: the numpy path
    assert fast.dtype == torch.int64 and fast.shape == (1, 50, 3)
    assert torch.equal(fast, sim.argmax(dim=-1)) and fast[0, 0, 0] == 0
    # A permuted (non-contiguous) view and a tensor needing gradients give the same answer.
    view = sim.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    assert not view.is_contiguous() and torch.equal(reference_points(view), fast)
    assert torch.equal(reference_points(sim.clone().requires_grad_(True)), fast)


def test_local_readout_with_full_window_equals_global() -> None:
    torch.manual_seed(3)
    b, n, ck, k_obj, cv, h, w = 1, 3, 16, 2, 8, 6, 7
    q = torch.randn(b, ck, h, w)
    keys = torch.randn(b, n, ck, h, w)
    values = torch.randn(b, n, k_obj, cv, h, w)
    glob = memory_readout(q, keys, values, "global")
    local = memory_readout(q, keys, values, "local", window=max(h, w))
    torch.testing.assert_close(local, glob, rtol=1e-5, atol=1e-6)
    # A small window really is local: it must differ from global.
    assert not torch.allclose(memory_readout(q, keys, values, "local", window=3), glob, atol=1e-3)
    # Global readout by hand: softmax over all N*M positions, then the weighted sum of each object's values.
    weights = torch.softmax(l2_similarity(keys, q).flatten(2), dim=-1)  # B, P, N*M
    by_hand = torch.einsum("bpm,bkcm->bkcp", weights, values.permute(0, 2, 3, 1, 4, 5).flatten(3))
    torch.testing.assert_close(glob, by_hand.view(b, k_obj, cv, h, w), rtol=1e-5, atol=1e-6)
    # Precomputed value rows (the memory bank's cache) give the same readout.
    torch.testing.assert_close(memory_readout(q, keys, values, "local", window=3, rows=value_rows(values)),
                               memory_readout(q, keys, values, "local", window=3))


def test_propagator_with_full_window_gives_global_labels(small_cine) -> None:
    frames, labels = small_cine
    torch.manual_seed(0)
    net = LocalMatchingNetwork().eval()
    supports = {0: labels[0]}
    plain = RunSettings(device="cpu", temporal_blend=0.0, support_warp=0.0)  # the network's labels alone
    size_in_cells = max(frames.shape[1:]) // 16  # 8: an odd window of 9 covers the whole map
    local = Propagator.load(net, plain.replace(window=size_in_cells + 1), accelerate=False)
    glob = Propagator.load(net, plain.replace(method="global"), accelerate=False)
    out_local, out_global = local.propagate(frames, supports), glob.propagate(frames, supports)
    assert np.array_equal(out_local, out_global)
    # The comparison can fail: a 1 x 1 window changes the labels of this cine.
    tiny = Propagator.load(net, plain.replace(window=1), accelerate=False)
    assert not np.array_equal(tiny.propagate(frames, supports), out_global)


def test_dense_scatter_and_embedding_bag_readout_agree(monkeypatch) -> None:
    torch.manual_seed(5)
    h = w = 32
    n, c, p = 3, 8, 2048  # p * N*M above the gather-sum threshold (4 Mi)
    sim = torch.randn(1, p, n, h * w)
    weights, idx = local_affinity(sim, h, w, window=3)
    rows = torch.randn(1, n * h * w, c)
    bag_calls = []
    real_bag = matching.F.embedding_bag
    monkeypatch.setattr(matching.F, "embedding_bag", lambda *a, **k: bag_calls.append(1) or real_bag(*a, **k))
    with torch.enable_grad():  # gradients possible -> dense scatter path
        dense = sparse_readout(rows, weights, idx)
    assert not bag_calls
    with torch.no_grad():
        gathered = sparse_readout(rows, weights, idx)
    assert bag_calls, "the embedding_bag path was not taken"
    torch.testing.assert_close(gathered, dense, rtol=1e-5, atol=1e-5)
    # And both equal the explicit weighted sum over each query's window.
    direct = (rows[0][idx[0]] * weights[0, ..., None]).sum(1)  # P, C
    torch.testing.assert_close(dense[0], direct, rtol=1e-5, atol=1e-5)


def test_global_affinity_is_a_softmax_over_all_memory() -> None:
    sim = torch.randn(1, 4, 2, 9)
    weights = global_affinity(sim)
    assert weights.shape == (1, 4, 18)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 4))


@pytest.fixture(scope="module")
def small_cine() -> tuple[np.ndarray, np.ndarray]:
    """A bright-background cine with two dark moving discs, 96 x 128 (6 x 8 matching cells)."""
    t, h, w = 5, 96, 128
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(0)
    frames = np.empty((t, h, w), np.uint8)
    labels = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        img = 200 + rng.normal(0, 4, (h, w))
        for oid, (cy, cx) in ((1, (30 + 2 * i, 40 + 3 * i)), (2, (60, 90 - 2 * i))):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 12**2
            img[disc] -= 90
            labels[i][disc] = oid
        frames[i] = np.clip(img, 0, 255)
    return frames, labels
