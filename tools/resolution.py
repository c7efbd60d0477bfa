"""How much J&F a decoder can keep when its finest map is at stride s: the resolution bound.

Each ground-truth object mask is area-pooled to stride s, upsampled back bilinearly and thresholded at
0.5, as a decoder that predicted perfect probabilities at that stride (and upsampled them) would draw it.
Thin guidewires vanish at stride 4: this is why the decoder has a sub-pixel detail head.

    python tools/resolution.py --data runs/heldout320 --strides 2,4,8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from XRayVOSLib.io import read_mask_folder
from XRayVOSLib.metrics import f_measure, j_measure


def through_stride(mask: np.ndarray, stride: int) -> np.ndarray:
    """[H, W] bool -> the same mask after area pooling to `stride` and bilinear upsampling (threshold 0.5)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    h, w = mask.shape
    pooled = F.adaptive_avg_pool2d(t, (max(1, h // stride), max(1, w // stride)))
    return F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5


def resolution_bound(data: Path, strides: list[int], every: int = 1) -> dict[int, dict[str, float]]:
    """{stride: {"J", "F", "J&F", "objects"}}: means over every object in every `every`-th annotated frame."""
    scores: dict[int, list[tuple[float, float]]] = {s: [] for s in strides}
    for video in sorted(p for p in (data / "Annotations").iterdir() if p.is_dir()):
        for index, labels in list(read_mask_folder(video).items())[::every]:
            for object_id in np.unique(labels[labels > 0]):
                mask = labels == object_id
                for s in strides:
                    drawn = through_stride(mask, s)
                    scores[s].append((j_measure(drawn, mask), f_measure(drawn, mask)))
    out = {}
    for s, rows in scores.items():
        arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
        j, f = (float(arr[:, 0].mean()), float(arr[:, 1].mean())) if len(arr) else (float("nan"), float("nan"))
        out[s] = {"J": j, "F": f, "J&F": (j + f) / 2, "objects": len(arr)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="J&F kept by masks pooled to a stride and upsampled back")
    parser.add_argument("--data", type=Path, required=True, help="DAVIS-layout folder (Annotations/VIDEO/*.png)")
    parser.add_argument("--strides", default="2,4,8", help="comma-separated strides")
    parser.add_argument("--every", type=int, default=1, help="use every n-th annotated frame")
    args = parser.parse_args(argv)
    strides = [int(s) for s in args.strides.split(",")]
    for s, r in resolution_bound(args.data, strides, args.every).items():
        print(f"stride {s}: J {r['J']:.3f}  F {r['F']:.3f}  J&F {r['J&F']:.3f}  ({r['objects']} object-frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
