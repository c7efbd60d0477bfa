"""Clip augmentation for training: MONAI dictionary transforms on a whole clip at once.

A clip is a dict with "image" [T, H, W] float in [0, 1] and "label" [T, H, W] integer ids, and optionally
"next" [1, H, W] (the frame after clip frame 1, used by the label-free consistency loss). MONAI treats the
first axis as channels, so one spatial draw moves every frame of the clip identically; a small per-frame
affine jitter (STCN) then adds plausible independent motion ("next" shares frame 1's jitter so the two stay
aligned, as consecutive frames are). Labels are resampled with mode="nearest" so ids stay exact.

Strengths:
  "none"   crop to the target aspect ratio and resize (no randomness).
  "weak"   affine (rotate +-15 deg, scale 0.9-1.1, small shear, translate), flips, mild elastic, a random
           resized crop, per-frame jitter; gamma 0.7-1.5, a little noise and blur.
  "strong" the weak spatial part; stronger gamma/contrast/brightness, blur and noise, and cut-out
           (RandCoarseDropoutd, image only: the label keeps the occluded object, as in FixMatch-style
           strong views).

Randomness: every MONAI random transform draws from its own RandomState; the datasets call
`set_random_state(seed)` per item so results are reproducible and DataLoader workers do not repeat
each other's draws.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
)

from XRayVOSLib.training.config import AUGMENT_STRENGTHS

STRENGTHS = AUGMENT_STRENGTHS  # defined beside the config, which validates it without importing MONAI
_SPATIAL_KEYS = ("image", "label", "next")
_MODES = ("bilinear", "nearest", "bilinear")  # per key in _SPATIAL_KEYS


@contextmanager
def _no_meta() -> Iterator[None]:
    """Run MONAI transforms on plain tensors: MetaTensor bookkeeping costs more than the warps on CPU."""
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def _plain(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """MetaTensor / ndarray -> plain torch.Tensor (collate and the losses need no MONAI metadata)."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)


class AspectCropd(MapTransform):
    """Centre-crop every key to the largest box with the target's aspect ratio.

    Hand-written: MONAI's CenterSpatialCropd needs the ROI size up front, and here it depends on the
    input's size (DAVIS frames are 854x480, X-ray cines 512x512 or 1024x1024, targets may be non-square).
    """

    def __init__(self, keys: tuple[str, ...], size: tuple[int, int], allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size = size

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        h, w = d["image"].shape[-2:]
        th, tw = self.size
        # the largest (ch, cw) <= (h, w) with ch / cw == th / tw
        ch, cw = (h, round(h * tw / th)) if h * tw <= w * th else (round(w * th / tw), w)
        if (ch, cw) == (h, w):
            return d
        return CenterSpatialCropd(self.keys, (ch, cw), allow_missing_keys=True)(d)


class FrameJitterd(Randomizable):
    """A small random affine per frame: rotate +-3 deg, scale +-3 %, translate +-1.5 % of the size.

    Hand-written: RandAffined draws one transform per call, so per-frame draws would cost T calls and
    three resamples each; here all frames go through one batched grid_sample (about 10x faster on CPU).
    "next" gets frame 1's transform so that pair stays aligned. Labels use nearest, zero padding.
    """

    def __init__(self, degrees: float = 3.0, scale: float = 0.03, translate: float = 0.015) -> None:
        self.degrees, self.scale, self.translate = degrees, scale, translate
        self._params = np.zeros((0, 4))

    def randomize(self, data: int) -> None:
        n = int(data)
        self._params = np.stack([
            np.deg2rad(self.R.uniform(-self.degrees, self.degrees, n)),
            1.0 + self.R.uniform(-self.scale, self.scale, n),
            self.R.uniform(-2 * self.translate, 2 * self.translate, n),  # normalised coordinates span 2
            self.R.uniform(-2 * self.translate, 2 * self.translate, n),
        ], axis=1)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        image, label = d["image"], d["label"]  # T, H, W each
        t, h, w = image.shape
        self.randomize(t)
        angle, scale, tx, ty = (torch.as_tensor(self._params[:, i], dtype=torch.float32) for i in range(4))
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        # rotation in pixel space, written in grid_sample's normalised coordinates (aspect-corrected)
        theta = torch.stack([torch.stack([cos, -sin * h / w, tx], 1), torch.stack([sin * w / h, cos, ty], 1)], 1)
        stack = [image, label] if "next" not in d else [torch.cat([image, d["next"]]), torch.cat([label, label[1:2]])]
        if "next" in d:
            theta = torch.cat([theta, theta[1:2]])  # T+1, 2, 3
        grid = F.affine_grid(theta, (theta.shape[0], 1, h, w), align_corners=False)
        img = F.grid_sample(stack[0].unsqueeze(1).float(), grid, "bilinear", "zeros", align_corners=False)[:, 0]
        lab = F.grid_sample(stack[1].unsqueeze(1).float(), grid, "nearest", "zeros", align_corners=False)[:, 0]
        d["image"], d["label"] = img[:t], lab[:t]
        if "next" in d:
            d["next"] = img[t:]
        return d


def _clamp01(d: dict) -> dict:
    d["image"] = d["image"].clamp(0.0, 1.0)
    return d


class ClipAugmentation:
    """Callable on a clip dict; `spatial` and `intensity` are also usable on their own.

    DavisClipDataset uses them separately: one spatial draw for the clip, then intensity augmentation of
    one strength on really labelled frames and another on pseudo-labelled frames.
    """

    def __init__(self, strength: str, size: tuple[int, int]) -> None:
        if strength not in STRENGTHS:
            raise ValueError(f"augmentation strength must be one of {STRENGTHS}, got {strength!r}")
        self.strength = strength
        self.size = (int(size[0]), int(size[1]))
        keys = _SPATIAL_KEYS
        resize = Resized(keys, self.size, mode=_MODES, anti_aliasing=(True, False, True), allow_missing_keys=True)
        if strength == "none":
            self.shared = Compose([AspectCropd(keys, self.size), resize])
            self.jitter: FrameJitterd | None = None
            self.intensity_transform = Compose([])
            return
        # One draw for the whole clip (frames are channels). The random resized crop comes first so the
        # affine and elastic warps run at the target size with a cached sampling grid (cheaper on CPU).
        self.shared = Compose([
            AspectCropd(keys, self.size),
            RandScaleCropd(keys, roi_scale=0.7, max_roi_scale=1.0, random_center=True, random_size=True,
                           allow_missing_keys=True),
            resize,
            RandAffined(keys, spatial_size=self.size, cache_grid=True, prob=0.8, rotate_range=np.deg2rad(15.0),
                        scale_range=0.1, shear_range=0.08, translate_range=(0.06 * self.size[0], 0.06 * self.size[1]),
                        mode=_MODES, padding_mode="zeros", allow_missing_keys=True),
            RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
            RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
            Rand2DElasticd(keys, spacing=(48, 48), magnitude_range=(0.5, 1.5), spatial_size=self.size, prob=0.3,
                           mode=_MODES, padding_mode="zeros", allow_missing_keys=True),
        ])
        # Small independent motion per frame (STCN's per-frame affine), at the target size.
        self.jitter = FrameJitterd()
        if strength == "weak":
            intensity = [
                RandAdjustContrastd("image", prob=0.5, gamma=(0.7, 1.5)),
                RandGaussianSmoothd("image", sigma_x=(0.25, 0.8), sigma_y=(0.25, 0.8), prob=0.2),
                RandGaussianNoised("image", prob=0.3, std=0.02),
            ]
        else:
            hole = max(4, min(self.size) // 8)
            intensity = [
                RandAdjustContrastd("image", prob=0.8, gamma=(0.5, 2.0)),
                RandScaleIntensityd("image", factors=0.25, prob=0.6),  # contrast: x * (1 + U(-.25, .25))
                RandShiftIntensityd("image", offsets=0.15, prob=0.6),  # brightness
                RandGaussianSmoothd("image", sigma_x=(0.5, 1.8), sigma_y=(0.5, 1.8), prob=0.5),
                RandGaussianNoised("image", prob=0.7, std=0.06),
                RandCoarseDropoutd("image", holes=1, max_holes=4, spatial_size=hole, max_spatial_size=3 * hole,
                                   fill_value=(0.0, 1.0), prob=0.5),
            ]
        self.intensity_transform = Compose([*intensity, _clamp01])

    def set_random_state(self, seed: int) -> ClipAugmentation:
        """Re-seed every random transform (call per item for reproducible, worker-independent draws)."""
        rng = np.random.default_rng(int(seed) & 0xFFFFFFFF)
        s1, s2, s3 = (int(v) for v in rng.integers(0, 2**31 - 1, 3))
        self.shared.set_random_state(seed=s1)
        self.intensity_transform.set_random_state(seed=s2)
        if self.jitter is not None:
            self.jitter.set_random_state(seed=s3)
        return self

    def spatial(self, data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shared spatial transform + per-frame jitter. image [T,H,W], label [T,H,W], next [1,H,W] (optional)
        -> the same keys at `size`; image float32, label int64, plain tensors."""
        d = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v) for k, v in data.items()}
        d["image"] = d["image"].float()
        d["label"] = d["label"].float()  # exact for ids < 2**24; resampled with nearest
        if "next" in d:
            d["next"] = d["next"].float()
        with _no_meta():
            d = self.shared(d)
            if self.jitter is not None:
                d = self.jitter(d)
        out = {k: _plain(v) for k, v in d.items()}
        out["label"] = out["label"].round().long()
        out["image"] = out["image"].float().clamp(0.0, 1.0)
        if "next" in out:
            out["next"] = out["next"].float().clamp(0.0, 1.0)
        return out

    def intensity(self, image: torch.Tensor) -> torch.Tensor:
        """[N, H, W] in [0, 1] -> same shape, one intensity draw for all N frames (one cine's display)."""
        if self.strength == "none":
            return image
        with _no_meta():
            return _plain(self.intensity_transform({"image": image})["image"]).float()

    def __call__(self, data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        d = self.spatial(data)
        if "next" in d:
            t = d["image"].shape[0]
            both = self.intensity(torch.cat([d["image"], d["next"]]))  # T+1, H, W: same draw for "next"
            d["image"], d["next"] = both[:t], both[t:]
        else:
            d["image"] = self.intensity(d["image"])
        return d


def build_augmentation(strength: str, size: tuple[int, int]) -> Callable[[dict], dict]:
    """A ClipAugmentation: dict(image [T,H,W] in [0,1], label [T,H,W] int[, next [1,H,W]]) -> same keys at size."""
    return ClipAugmentation(strength, size)


def cutmix(frames: torch.Tensor, labels: torch.Tensor, p: float,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box from another clip of the batch into each clip with probability p.

    frames: B, T, 1, H, W;  labels: B, T, H, W  ->  new tensors of the same shapes.
    The box (5-25 % of the area) sits at the same place in every frame and shows the donor clip's frames
    at the same times, so the pasted content moves like real anatomy. Choice: labels inside the box become
    background (0). The pasted objects are distractors, and the clip's own objects under the box are
    occluded; the object ids and num_objects of the clip stay valid (no id offsets, no new objects that are
    absent from frame 0). Hand-written: MONAI has no batch-level CutMix for multi-frame segmentation.
    """
    b, _t, _c, h, w = frames.shape
    source = frames
    frames, labels = frames.clone(), labels.clone()
    if b < 2 or p <= 0:
        return frames, labels
    apply = torch.rand(b, generator=generator) < p
    donors = (torch.arange(b) + torch.randint(1, b, (b,), generator=generator)) % b  # never itself
    for i in torch.nonzero(apply).flatten().tolist():
        area = 0.05 + 0.20 * torch.rand(1, generator=generator).item()
        aspect = float(torch.empty(1).uniform_(-0.5, 0.5, generator=generator).exp())
        bh = max(1, min(h, round((area * h * w * aspect) ** 0.5)))
        bw = max(1, min(w, round((area * h * w / aspect) ** 0.5)))
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
        j = int(donors[i])
        frames[i, :, :, y0 : y0 + bh, x0 : x0 + bw] = source[j, :, :, y0 : y0 + bh, x0 : x0 + bw]
        labels[i, :, y0 : y0 + bh, x0 : x0 + bw] = 0
    return frames, labels
