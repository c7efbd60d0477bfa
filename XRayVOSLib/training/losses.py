"""Training losses: STCN's bootstrapped cross-entropy, the object-aware supervised contrastive loss on key
projections, and the label-free space-time consistency loss of the two-shot student.

All three are hand-written: MONAI's losses (DiceCE, Focal, ContrastiveLoss for paired SimCLR views) have
no top-p pixel bootstrapping, no multi-frame supervised InfoNCE with class-balanced pixel sampling, and no
cycle/argmax-matching consistency.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -1


class BootstrappedCE(nn.Module):
    """STCN's bootstrapped CE: plain CE before `start_warm`; afterwards the mean over the hardest p of the
    pixels, p decaying linearly from 1.0 at start_warm to `top_p` at end_warm (and top_p after)."""

    def __init__(self, start_warm: int = 2000, end_warm: int = 7000, top_p: float = 0.15) -> None:
        super().__init__()
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if end_warm < start_warm:
            raise ValueError(f"end_warm ({end_warm}) must be >= start_warm ({start_warm})")
        self.start_warm, self.end_warm, self.top_p = start_warm, end_warm, top_p

    def fraction(self, step: int) -> float:
        if step < self.start_warm:
            return 1.0
        if step >= self.end_warm:
            return self.top_p
        progress = (step - self.start_warm) / max(1, self.end_warm - self.start_warm)
        return self.top_p + (1.0 - self.top_p) * (1.0 - progress)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        # logits: B, C, H, W;  target: B, H, W (0..C-1)  ->  (scalar loss, fraction of pixels used)
        raw = F.cross_entropy(logits, target, reduction="none")  # B, H, W
        if step < self.start_warm:
            return raw.mean(), 1.0
        p = self.fraction(step)
        raw = raw.flatten()  # B*H*W
        k = max(1, int(raw.numel() * p))
        hardest, _ = torch.topk(raw, k, sorted=False)
        return hardest.mean(), p


def downsample_labels(labels: torch.Tensor, size: tuple[int, int], min_object_fraction: float = 0.05) -> torch.Tensor:
    """Full-resolution label maps -> one label per feature cell; IGNORE (-1) for ambiguous cells.

    labels: B, H, W (0..K)  ->  B, h, w int64.
    Object-favouring majority: a cell takes the object covering the largest share of it if that share is at
    least `min_object_fraction`; it is background only when it is entirely background; otherwise it is
    ignored. Plain majority (or nearest) would erase catheters and guidewires, which are 1-3 pixels wide
    while a stride-16 cell is 16 pixels wide (on synthetic 320x320 cines at stride 16, a 0.2 threshold
    keeps half as many vessel cells as 0.05 and drops most guidewires); pure cells keep the background
    samples clean.
    Cells are the area-pooling footprints of F.interpolate(mode="area") (exact when H, W divide h, w).
    """
    b, h_full, w_full = labels.shape
    if (h_full, w_full) == tuple(size):
        return labels.long()
    num = int(labels.max().item()) + 1 if labels.numel() else 1
    one_hot = F.one_hot(labels.long().clamp(min=0), num).permute(0, 3, 1, 2).float()  # B, K+1, H, W
    frac = F.interpolate(one_hot, size=size, mode="area")  # B, K+1, h, w: share of each class per cell
    out = torch.full((b, *size), IGNORE, dtype=torch.long, device=labels.device)
    out[frac[:, 0] >= 1.0 - 1e-6] = 0
    if num > 1:
        best, best_id = frac[:, 1:].max(dim=1)
        is_object = best >= min_object_fraction
        out[is_object] = best_id[is_object] + 1
    return out


def sample_contrastive_pixels(
    labels: list[torch.Tensor], num_objects: int, max_per_object: int = 64, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-balanced pixel sample for one clip.

    labels: per frame h, w (cell labels, IGNORE allowed). Classes = background + the objects 1..num_objects
    present in every frame. n = min(smallest per-frame class count, max_per_object) pixels are drawn without
    replacement per class per frame. Returns (frame index, flat position, class) each [C * F * n] int64;
    empty when fewer than 2 classes.
    """
    present = None
    for lab in labels:
        ids = set(torch.unique(lab).tolist())
        present = ids if present is None else present & ids
    classes = sorted(c for c in (present or set()) if 0 <= c <= num_objects)
    empty = torch.zeros(0, dtype=torch.long)
    if len(classes) < 2:
        return empty, empty, empty
    flat = [lab.flatten().cpu() for lab in labels]
    n = min(int((f == c).sum()) for f in flat for c in classes)
    n = min(n, max_per_object)
    frames, positions, cls = [], [], []
    for t, f in enumerate(flat):
        for c in classes:
            where = torch.nonzero(f == c).flatten()
            pick = where[torch.randperm(len(where), generator=generator)[:n]]
            positions.append(pick)
            frames.append(torch.full_like(pick, t))
            cls.append(torch.full_like(pick, c))
    return torch.cat(frames), torch.cat(positions), torch.cat(cls)


def supervised_info_nce(z: torch.Tensor, classes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al.'s L_out. z: N, D (L2-normalised), classes: N  ->  per-anchor losses [N'] for the anchors
    that have at least one positive. Positives: every other sample of the same class (same or other frame);
    the denominator runs over every other sample."""
    n = z.shape[0]
    logits = z @ z.t() / temperature  # N, N
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (classes.unsqueeze(0) == classes.unsqueeze(1)) & ~self_mask
    count = positive.sum(dim=1)
    keep = count > 0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1)[keep] / count[keep]
    return -mean_log_prob


def object_contrastive_loss(
    features: list[torch.Tensor],
    labels: list[torch.Tensor],
    num_objects: torch.Tensor,
    temperature: float = 0.1,
    max_per_object: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Object-aware supervised contrastive loss over the frames of a clip.

    features: per frame B, D, h, w (L2-normalised projections; re-normalised here to be safe);
    labels: per frame B, H, W full resolution (cells: `downsample_labels`); num_objects: B.
    Per clip: class-balanced samples from every frame (`sample_contrastive_pixels`); every sample is an
    anchor; positives are all other samples of its class, in other frames and in the same frame (the
    same-frame ones pull an object's pixels together, the cross-frame ones make keys match over time);
    negatives are the other classes. Returns the mean over all anchors of the batch; 0 (connected to the
    graph) when no clip has 2 classes.
    """
    b, _d, h, w = features[0].shape
    cells = [downsample_labels(lab, (h, w)) for lab in labels]  # per frame B, h, w
    losses = []
    for i in range(b):
        t_idx, pos, cls = sample_contrastive_pixels([c[i] for c in cells], int(num_objects[i]), max_per_object,
                                                    generator)
        if cls.numel() == 0:
            continue
        stacked = torch.stack([f[i].flatten(1) for f in features])  # F, D, h*w
        device = stacked.device
        z = stacked[t_idx.to(device), :, pos.to(device)]  # N, D
        z = F.normalize(z, dim=1)
        losses.append(supervised_info_nce(z, cls.to(device), temperature))
    if not losses or sum(x.numel() for x in losses) == 0:
        return sum(f.sum() for f in features) * 0.0
    return torch.cat(losses).mean()


def consistency_loss(key_t: torch.Tensor, key_next: torch.Tensor, key_anchor: torch.Tensor,
                     temperature: float = 0.07) -> torch.Tensor:
    """Label-free space-time consistency between frame t and t+1 through an anchor frame.

    key_t, key_next, key_anchor: B, C, h, w. For every position p the best anchor match of key_t[p]
    (arg-max, detached) is the target class for softmax(sim(key_next[p], anchor) / T), and the other way
    round; the two cross-entropies are averaged. sim is cosine similarity: keys are not normalised and
    a fixed temperature needs a bounded similarity (negative L2 scales with the key norm).
    """
    a = F.normalize(key_anchor.flatten(2), dim=1)  # B, C, M
    qt = F.normalize(key_t.flatten(2), dim=1).transpose(1, 2)  # B, P, C
    qn = F.normalize(key_next.flatten(2), dim=1).transpose(1, 2)
    sim_t = torch.bmm(qt, a) / temperature  # B, P, M
    sim_n = torch.bmm(qn, a) / temperature
    target_t = sim_t.detach().argmax(dim=-1)  # B, P
    target_n = sim_n.detach().argmax(dim=-1)
    loss_n = F.cross_entropy(sim_n.transpose(1, 2), target_t)  # next must pick t's match
    loss_t = F.cross_entropy(sim_t.transpose(1, 2), target_n)
    return 0.5 * (loss_n + loss_t)
