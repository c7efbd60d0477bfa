"""Training losses: bootstrapped CE, object contrastive loss, label-free consistency loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from XRayVOSLib.training.losses import (
    IGNORE,
    BootstrappedCE,
    consistency_loss,
    downsample_labels,
    object_contrastive_loss,
    sample_contrastive_pixels,
)

# ---------------------------------------------------------------- bootstrapped CE


def _known_ce_case() -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """10 pixels, target class 0 with logit 0, class 1 with logit d: CE = log(1 + e^d)."""
    d = torch.tensor([-5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
    logits = torch.stack([torch.zeros(10), d]).view(1, 2, 2, 5)  # B=1, C=2, H=2, W=5
    target = torch.zeros(1, 2, 5, dtype=torch.long)
    return logits, target, [math.log1p(math.exp(v)) for v in d.tolist()]


def test_bootstrapped_ce_is_plain_ce_before_warmup() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 6, 7), torch.randint(0, 4, (2, 6, 7))
    loss, p = BootstrappedCE(start_warm=100, end_warm=200, top_p=0.15)(logits, target, step=99)
    assert p == 1.0
    assert torch.allclose(loss, F.cross_entropy(logits, target))


def test_bootstrapped_ce_keeps_only_hardest_pixels_after_warmup() -> None:
    logits, target, ce = _known_ce_case()
    loss, p = BootstrappedCE(start_warm=10, end_warm=20, top_p=0.2)(logits, target, step=500)
    assert p == pytest.approx(0.2)
    hardest_two = (ce[-1] + ce[-2]) / 2  # 20 % of 10 pixels: d = 3 and d = 2
    assert loss.item() == pytest.approx(hardest_two, rel=1e-5)
    assert loss.item() > sum(ce) / len(ce)  # bootstrapping raises the loss above the plain mean


def test_bootstrapped_ce_fraction_decays_linearly() -> None:
    ce = BootstrappedCE(start_warm=100, end_warm=300, top_p=0.2)
    logits, target, _ = _known_ce_case()
    assert ce(logits, target, 100)[1] == pytest.approx(1.0)
    assert ce(logits, target, 200)[1] == pytest.approx(0.6)
    assert ce(logits, target, 300)[1] == pytest.approx(0.2)
    # at p = 1.0 (start of warm-up) the loss is the plain mean
    assert ce(logits, target, 100)[0].item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)


def test_bootstrapped_ce_gradient_reaches_only_selected_pixels() -> None:
    logits, target, _ = _known_ce_case()
    logits.requires_grad_(True)
    loss, _ = BootstrappedCE(start_warm=0, end_warm=0, top_p=0.2)(logits, target, step=10)
    loss.backward()
    per_pixel = logits.grad.abs().sum(dim=1).flatten()  # 10 pixels
    assert torch.count_nonzero(per_pixel) == 2
    assert per_pixel[-2:].gt(0).all()
    assert logits.grad[0, 1].flatten()[-1] > 0  # raising the wrong class' logit raises the loss


# ---------------------------------------------------------------- object contrastive loss


def _independent_supcon(z: list[list[float]], cls: list[int], tau: float) -> float:
    """Khosla's L_out written out with math only."""
    total, anchors = 0.0, 0
    for i, zi in enumerate(z):
        dots = [sum(a * b for a, b in zip(zi, zj)) / tau for zj in z]
        denom = sum(math.exp(dots[a]) for a in range(len(z)) if a != i)
        positives = [p for p in range(len(z)) if p != i and cls[p] == cls[i]]
        total += -sum(math.log(math.exp(dots[p]) / denom) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def test_contrastive_known_value_two_classes_two_frames() -> None:
    # frame 0: background at (0,0), object at (0,1); frame 1 the same. Features 2-d unit vectors.
    angles = {(0, 0): 0.0, (0, 1): 1.2, (1, 0): 0.3, (1, 1): 1.9}  # (frame, class) -> angle
    feats = []
    for f in range(2):
        v = torch.tensor([[math.cos(angles[f, c]), math.sin(angles[f, c])] for c in range(2)])  # 2 px, D
        feats.append(v.t().reshape(1, 2, 1, 2))  # B=1, D=2, h=1, w=2
    labels = [torch.tensor([[[0, 1]]]) for _ in range(2)]  # B, H, W
    tau = 0.5
    loss = object_contrastive_loss(feats, labels, torch.tensor([1]), temperature=tau)
    z = [[math.cos(angles[f, c]), math.sin(angles[f, c])] for f in range(2) for c in range(2)]
    expected = _independent_supcon(z, [0, 1, 0, 1], tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _blob_labels(shift: int) -> torch.Tensor:
    lab = torch.zeros(8, 8, dtype=torch.long)
    lab[1 + shift : 4 + shift, 1:4] = 1
    lab[4:7, 4 + shift : 7 + shift] = 2
    return lab


def test_contrastive_separated_features_beat_shuffled() -> None:
    g = torch.Generator().manual_seed(0)
    labels = [_blob_labels(0).unsqueeze(0), _blob_labels(1).unsqueeze(0)]  # B=1, 8, 8
    basis = torch.eye(16)[:3]  # class c -> direction e_c
    feats = []
    for lab in labels:
        f = basis[lab[0]].permute(2, 0, 1) + 0.05 * torch.randn(16, 8, 8, generator=g)
        feats.append(F.normalize(f, dim=0).unsqueeze(0))  # B, D, h, w
    perm = torch.randperm(64, generator=g)
    shuffled = [f.flatten(2)[:, :, perm].view_as(f) for f in feats]
    good = object_contrastive_loss(feats, labels, torch.tensor([2]), generator=torch.Generator().manual_seed(1))
    bad = object_contrastive_loss(shuffled, labels, torch.tensor([2]), generator=torch.Generator().manual_seed(1))
    assert good.item() < bad.item() - 0.5


def test_contrastive_samples_are_class_balanced_and_seeded() -> None:
    f0 = torch.zeros(10, 10, dtype=torch.long)
    f0[:2, :5] = 1  # 10 pixels
    f0[5, :4] = 2  # 4 pixels (the smallest class)
    f1 = torch.zeros(10, 10, dtype=torch.long)
    f1[:6, :6] = 1  # 36 pixels
    f1[8, :7] = 2  # 7 pixels
    f1[9, 9] = 3  # object 3 only in frame 1: not a class
    t, pos, cls = sample_contrastive_pixels([f0, f1], num_objects=3, generator=torch.Generator().manual_seed(3))
    counts = {(int(a), int(c)): int(((t == a) & (cls == c)).sum()) for a in (0, 1) for c in (0, 1, 2, 3)}
    assert counts == {(0, 0): 4, (0, 1): 4, (0, 2): 4, (0, 3): 0, (1, 0): 4, (1, 1): 4, (1, 2): 4, (1, 3): 0}
    frames = torch.stack([f0, f1]).flatten(1)
    assert torch.equal(frames[t, pos], cls)  # every sampled pixel really has its class
    assert len(set(zip(t.tolist(), pos.tolist()))) == len(pos)  # without replacement
    again = sample_contrastive_pixels([f0, f1], 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again[1], pos)
    capped = sample_contrastive_pixels([f0, f1], 3, max_per_object=2, generator=torch.Generator().manual_seed(3))
    assert len(capped[2]) == 2 * 3 * 2  # frames x classes x 2


def test_contrastive_gradient_flows_to_features() -> None:
    torch.manual_seed(0)
    labels = [_blob_labels(0).unsqueeze(0), _blob_labels(1).unsqueeze(0)]
    raw = [torch.randn(1, 8, 8, 8, requires_grad=True) for _ in range(2)]
    loss = object_contrastive_loss([F.normalize(r, dim=1) for r in raw], labels, torch.tensor([2]))
    loss.backward()
    for r in raw:
        assert r.grad is not None and torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0


def test_contrastive_single_class_is_zero_with_grad() -> None:
    raw = torch.randn(2, 8, 4, 4, requires_grad=True)
    feats = [F.normalize(raw, dim=1)] * 2
    labels = [torch.zeros(2, 4, 4, dtype=torch.long)] * 2
    loss = object_contrastive_loss(feats, labels, torch.tensor([1, 1]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert raw.grad is not None


def test_downsample_labels_keeps_thin_objects_and_ignores_mixed_cells() -> None:
    lab = torch.zeros(1, 16, 16, dtype=torch.long)
    lab[0, :, 5:7] = 1  # a 2-pixel-wide wire: 25 % of each 8x8 cell it crosses
    lab[0, 12, 12] = 2  # one pixel of object 2: 1/64 of its cell
    cells = downsample_labels(lab, (2, 2))
    assert cells.tolist() == [[[1, 0], [1, IGNORE]]]


# ---------------------------------------------------------------- consistency loss


def _orthogonal_keys(b: int = 1, c: int = 32, h: int = 4, w: int = 4) -> torch.Tensor:
    keys = torch.eye(c)[: h * w].t().reshape(c, h, w)  # position p -> basis vector e_p
    return keys.unsqueeze(0).repeat(b, 1, 1, 1) * 3.0  # not unit-norm: the loss normalises


def test_consistency_near_zero_for_identical_sharp_keys() -> None:
    key = _orthogonal_keys()
    loss = consistency_loss(key, key.clone(), key.clone())
    assert 0 <= loss.item() < 1e-3


def test_consistency_larger_for_shuffled_next_frame() -> None:
    key = _orthogonal_keys(b=2)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    shuffled = key.flatten(2)[:, :, perm].view_as(key)
    same = consistency_loss(key, key.clone(), key.clone())
    moved = consistency_loss(key, shuffled, key.clone())
    assert moved.item() > 1.0 > same.item()


def test_consistency_gradient_flows() -> None:
    torch.manual_seed(0)
    kt, kn, ka = (torch.randn(2, 16, 5, 5, requires_grad=True) for _ in range(3))
    loss = consistency_loss(kt, kn, ka)
    loss.backward()
    for k in (kt, kn, ka):
        assert k.grad is not None and torch.isfinite(k.grad).all() and k.grad.abs().sum() > 0
