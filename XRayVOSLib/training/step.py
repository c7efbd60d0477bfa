"""One training step on a batch of clips, as a module so DDP can wrap it (DDP syncs through forward()).

STCN's recipe: frame 0 with its mask goes to memory; frame 1 is segmented from memory; its predicted
mask is encoded and added; frame 2 is segmented from both. The same local-matching readout as inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.losses import BootstrappedCE, consistency_loss, object_contrastive_loss


def object_masks(labels: torch.Tensor, num_channels: int) -> torch.Tensor:
    """labels B, H, W (0..K) -> B, K, H, W float one-hot of objects 1..K."""
    return F.one_hot(labels.long(), num_channels + 1)[..., 1:].permute(0, 3, 1, 2).float()


class ClipStep(nn.Module):
    def __init__(self, network: LocalMatchingNetwork, config: TrainConfig) -> None:
        super().__init__()
        self.network = network
        self.config = config
        lc = config.losses
        self.ce = BootstrappedCE(lc.bootstrap_start, lc.bootstrap_end, lc.bootstrap_top_p)

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        cfg, lc, net = self.config, self.config.losses, self.network
        frames, labels = batch["frames"], batch["labels"]  # B, T, 1, H, W;  B, T, H, W
        b, t = frames.shape[:2]
        k = int(labels.max().item()) if labels.numel() else 1
        k = max(k, 1)
        q_all = net.encode_query(frames.flatten(0, 1))
        split = lambda x: x.view(b, t, *x.shape[1:])  # noqa: E731
        keys, feats, images = split(q_all.key), split(q_all.feature), split(q_all.image)
        skips = [split(s) for s in q_all.skips]
        query = lambda i: type(q_all)(keys[:, i], feats[:, i], [s[:, i] for s in skips], images[:, i])  # noqa: E731

        q0 = query(0)
        mem_keys = [q0.key]
        mem_values = [net.encode_value(q0, object_masks(labels[:, 0], k))]
        losses: dict[str, torch.Tensor] = {}
        total = frames.new_zeros(())
        for i in range(1, t):
            qi = query(i)
            logits, probs = net.segment(qi, torch.stack(mem_keys, 1), torch.stack(mem_values, 1), cfg.matching,
                                        cfg.window)
            if lc.cross_entropy:
                ce, _ = self.ce(logits, labels[:, i].long(), step)
                losses[f"ce{i}"] = ce
                total = total + ce
            if i < t - 1:
                mem_keys.append(qi.key)
                mem_values.append(net.encode_value(qi, probs[:, 1:]))
        if lc.contrastive:
            proj = [net.project(keys[:, i]) for i in range(t)]
            con = object_contrastive_loss(proj, [labels[:, i] for i in range(t)], batch["num_objects"],
                                          temperature=lc.contrastive_temperature)
            losses["contrastive"] = con
            total = total + lc.contrastive_weight * con
        if lc.consistency and "frame_next" in batch:
            key_next = net.encode_query(batch["frame_next"]).key
            cons = consistency_loss(keys[:, 1], key_next, keys[:, 0])
            losses["consistency"] = cons
            total = total + lc.consistency_weight * cons
        losses["total"] = total
        return losses
