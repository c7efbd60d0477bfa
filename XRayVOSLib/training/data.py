"""Training clips: synthetic cines generated on the fly, or a DAVIS-layout folder (sparse annotations,
optionally dense pseudo-labels for the two-shot student).

A clip is `clip_length` frames of one video, in time order or reversed (50 %), consecutive frames at most
`max_skip` frames apart (STCN's curriculum grows it), plus `frame_next`, the frame after clip frame 1 in
the clip's direction, for the label-free consistency loss. Objects are those present in the clip's first
frame (at most `max_objects`, chosen at random), renumbered 1..K; other ids become background.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from XRayVOSLib.errors import InputError
from XRayVOSLib.propagation.intensity import intensity_range, to_unit_range
from XRayVOSLib.training.augment import ClipAugmentation

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MIN_OBJECT_PIXELS = 10  # an object smaller than this in the (augmented) first frame is not a target
_ATTEMPTS = 6  # augmentation draws tried before falling back to resize-only


class ClipSample(TypedDict):
    frames: torch.Tensor  # T, 1, H, W float32 in [0, 1]
    labels: torch.Tensor  # T, H, W int64, 0 = background, 1..K
    num_objects: int  # K >= 1
    labelled: torch.Tensor  # T bool: real annotation (True) or pseudo-label (False)
    frame_next: torch.Tensor  # 1, H, W


def max_skip_schedule(step: int, total_steps: int, max_skip: int = 15) -> int:
    """STCN-like curriculum: from 20 % of max_skip at the start, growing linearly to max_skip at half of
    training, held until 90 %, then shrunk to 70 % of max_skip for the last 10 % (STCN ends on short skips)."""
    if total_steps <= 0:
        return max(1, max_skip)
    x = min(max(step / total_steps, 0.0), 1.0)
    low = 0.2 * max_skip
    if x < 0.5:
        skip = low + (max_skip - low) * x / 0.5
    elif x < 0.9:
        skip = max_skip
    else:
        skip = 0.7 * max_skip
    return max(1, round(skip))


def sample_clip(available: np.ndarray, clip_length: int, max_skip: int, rng: np.random.Generator,
                first: int | None = None) -> list[int]:
    """Frame indices of one clip from the sorted usable indices `available`.

    Steps are at most max_skip frames where the indices allow, else the nearest next usable frame (sparse
    annotations). Fewer usable frames than clip_length: the clip walks back and forth (a, b, a).
    `first`: the clip must start at that index.
    """
    seq = np.asarray(available)
    n = len(seq)
    if n == 1:
        return [int(seq[0])] * clip_length
    reverse = bool(rng.random() < 0.5)
    pos = None if first is None else int(np.searchsorted(seq, first))
    if pos is not None:
        room_fwd, room_back = n - 1 - pos, pos
        if min(room_fwd, room_back) < clip_length - 1:  # go where there is room
            reverse = room_back > room_fwd
        if reverse:
            pos = n - 1 - pos
    if reverse:
        seq = seq[::-1]
    if n < clip_length or (pos is not None and n - 1 - pos < clip_length - 1):
        # too few usable frames ahead: ping-pong (a, b, a) from the start
        cycle = np.concatenate([seq, seq[-2:0:-1]])
        start = 0 if pos is None else pos
        return [int(cycle[(start + i) % len(cycle)]) for i in range(clip_length)]
    if pos is None:
        pos = int(rng.integers(0, n - clip_length + 1))
    clip = [pos]
    for left in range(clip_length - 1, 0, -1):
        cur = clip[-1]
        last = n - left  # leave room for the remaining frames
        cands = [q for q in range(cur + 1, last + 1) if abs(int(seq[q]) - int(seq[cur])) <= max_skip]
        clip.append(int(rng.choice(cands)) if cands else cur + 1)
    return [int(seq[q]) for q in clip]


def next_index(clip: list[int], exists) -> int:
    """The frame after clip[1] in the clip's direction; the other neighbour or clip[1] itself at the ends."""
    step = 1 if len(clip) < 2 or clip[1] >= clip[0] else -1
    for cand in (clip[1] + step, clip[1] - step):
        if exists(cand):
            return cand
    return clip[1]


def select_objects(first_labels: torch.Tensor, max_objects: int, rng: np.random.Generator) -> list[int]:
    """Ids (sorted) of up to max_objects objects with >= MIN_OBJECT_PIXELS pixels in the first frame."""
    ids, counts = torch.unique(first_labels, return_counts=True)
    present = [int(i) for i, c in zip(ids.tolist(), counts.tolist()) if i > 0 and c >= MIN_OBJECT_PIXELS]
    if len(present) > max_objects:
        present = sorted(int(v) for v in rng.choice(present, max_objects, replace=False))
    return present


def remap(labels: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Keep `ids` (renumbered 1..K in the given order), everything else -> 0. labels: T, H, W int64."""
    lut = torch.zeros(int(labels.max()) + 1 if labels.numel() else 1, dtype=torch.long)
    for new, old in enumerate(ids, start=1):
        if old < len(lut):
            lut[old] = new
    return lut[labels.clamp(min=0)]


def _item_rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def _finish(aug: dict[str, torch.Tensor], ids: list[int], labelled: torch.Tensor) -> ClipSample:
    return ClipSample(frames=aug["image"].unsqueeze(1).contiguous(), labels=remap(aug["label"], ids),
                      num_objects=len(ids), labelled=labelled, frame_next=aug["next"].contiguous())


class SyntheticClipDataset(Dataset):
    """Clips of synthetic cines, generated on the fly (about 0.2 s CPU per 12-frame 320x320 cine)."""

    def __init__(self, length: int, size: tuple[int, int] = (320, 320), clip_length: int = 3, max_objects: int = 3,
                 seed: int = 0, synth_frames: int = 12, augment: str = "weak", synth_config=None) -> None:
        if synth_frames < clip_length + 1:
            raise InputError(f"synth_frames ({synth_frames}) must exceed clip_length ({clip_length})")
        self.length, self.size = int(length), (int(size[0]), int(size[1]))
        self.clip_length, self.max_objects, self.seed = clip_length, max_objects, seed
        self.synth_frames, self.synth_config = synth_frames, synth_config
        self.augmentation = ClipAugmentation(augment, self.size)
        self.fallback = ClipAugmentation("none", self.size)
        self.max_skip = max(1, (synth_frames - 2) // max(1, clip_length - 1))
        self.epoch = 0

    def set_max_skip(self, max_skip: int) -> None:
        self.max_skip = max(1, int(max_skip))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def cine_seed(self, index: int) -> int:
        return self.seed * 1_000_003 + index + self.epoch * self.length

    def __getitem__(self, index: int) -> ClipSample:
        from XRayVOSLib.synth import generate_cine

        seed = self.cine_seed(index)
        cine = generate_cine(seed, self.synth_frames, max(self.size), self.synth_config)
        rng = _item_rng(self.seed, self.epoch, index)
        available = np.arange(self.synth_frames)
        for attempt in range(_ATTEMPTS + 1):
            clip = sample_clip(available, self.clip_length, self.max_skip, rng)
            nxt = next_index(clip, lambda i: 0 <= i < self.synth_frames)
            data = {"image": torch.from_numpy(to_unit_range(cine.frames[clip], (0.0, 255.0))),
                    "label": torch.from_numpy(cine.labels[clip].astype(np.int64)),
                    "next": torch.from_numpy(to_unit_range(cine.frames[nxt : nxt + 1], (0.0, 255.0)))}
            aug = self.augmentation if attempt < _ATTEMPTS else self.fallback
            out = aug.set_random_state(int(rng.integers(2**31)))(data)
            ids = select_objects(out["label"][0], self.max_objects, rng)
            if ids:
                return _finish(out, ids, torch.ones(self.clip_length, dtype=torch.bool))
        raise RuntimeError(f"synthetic cine {seed}: no object in the first clip frame")  # pragma: no cover


def _frame_files(folder: Path, suffixes: tuple[str, ...]) -> dict[int, Path]:
    """Files named by frame number (00012.png -> 12)."""
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in suffixes and re.fullmatch(r"\d+", p.stem):
            out.setdefault(int(p.stem), p)
    return dict(sorted(out.items()))


class _Video:
    def __init__(self, name: str, images: dict[int, Path], annotations: dict[int, Path], pseudo: dict[int, Path]):
        self.name, self.images, self.annotations, self.pseudo = name, images, annotations, pseudo
        usable = set(annotations) | set(pseudo)
        self.available = np.array(sorted(usable & set(images)), dtype=np.int64)
        self.annotated = np.array(sorted(set(annotations) & set(images)), dtype=np.int64)
        self.value_range: tuple[float, float] | None = None


class DavisClipDataset(Dataset):
    """Clips from root/JPEGImages/<video>/%05d.{png,jpg} with root/Annotations/<video>/%05d.png.

    Without pseudo_root only annotated frames are used. With pseudo_root (pseudo_root/<video>/%05d.png on
    every frame) any frame is usable; real annotations win where both exist; `labelled` flags them;
    pseudo-labelled frames get `pseudo_augment` intensity augmentation (the spatial draw is shared). With
    pseudo-labels, the first clip frame is a real annotation with probability `labelled_first`.
    Item i uses video i % len(videos); `repeats` multiplies the length.
    """

    def __init__(self, root: str | Path, size: tuple[int, int] = (320, 320), clip_length: int = 3,
                 max_objects: int = 3, augment: str = "weak", pseudo_root: str | Path | None = None,
                 pseudo_augment: str = "strong", videos: list[str] | None = None, repeats: int = 1,
                 seed: int = 0, max_skip: int = 10, labelled_first: float = 0.5) -> None:
        self.root = Path(root)
        self.size = (int(size[0]), int(size[1]))
        self.clip_length, self.max_objects, self.repeats = clip_length, max_objects, max(1, int(repeats))
        self.seed, self.max_skip, self.epoch, self.labelled_first = seed, max(1, int(max_skip)), 0, labelled_first
        self.augmentation = ClipAugmentation(augment, self.size)
        self.pseudo_augmentation = ClipAugmentation(pseudo_augment, self.size)
        self.fallback = ClipAugmentation("none", self.size)
        self.pseudo_root = Path(pseudo_root) if pseudo_root is not None else None
        image_root, ann_root = self.root / "JPEGImages", self.root / "Annotations"
        for folder in (image_root, ann_root):
            if not folder.is_dir():
                raise InputError(f"{folder} does not exist; expected a DAVIS layout (JPEGImages/, Annotations/)")
        names = sorted(p.name for p in image_root.iterdir() if p.is_dir()) if videos is None else list(videos)
        if not names:
            raise InputError(f"{image_root} holds no video folders; the dataset is empty")
        self.videos = [self._scan(name, image_root, ann_root) for name in names]

    def _scan(self, name: str, image_root: Path, ann_root: Path) -> _Video:
        image_dir, ann_dir = image_root / name, ann_root / name
        if not image_dir.is_dir():
            raise InputError(f"{image_dir} does not exist")
        images = _frame_files(image_dir, IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{image_dir} holds no frames named by number (00000.png)")
        annotations = _frame_files(ann_dir, (".png",)) if ann_dir.is_dir() else {}
        if not set(annotations) & set(images):
            raise InputError(f"{ann_dir}: video {name!r} has no annotated frame")
        pseudo: dict[int, Path] = {}
        if self.pseudo_root is not None:
            pseudo_dir = self.pseudo_root / name
            if not pseudo_dir.is_dir():
                raise InputError(f"{pseudo_dir}: no pseudo-labels for video {name!r}")
            pseudo = _frame_files(pseudo_dir, (".png",))
        return _Video(name, images, annotations, pseudo)

    def set_max_skip(self, max_skip: int) -> None:
        self.max_skip = max(1, int(max_skip))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos) * self.repeats

    def _image(self, video: _Video, index: int) -> np.ndarray:
        from XRayVOSLib.io.images import load_image

        arr, _colour = load_image(video.images[index])  # grey (RGB -> BT.601 luma)
        if video.value_range is None:  # one intensity mapping per video, as for a cine
            if arr.dtype == np.uint8:
                video.value_range = (0.0, 255.0)
            else:
                keys = list(video.images)
                sample = [load_image(video.images[k])[0] for k in keys[:: max(1, len(keys) // 8)]]
                video.value_range = intensity_range(np.stack(sample))
        return to_unit_range(arr, video.value_range)

    def _label(self, video: _Video, index: int) -> tuple[np.ndarray, bool]:
        from XRayVOSLib.io.masks import read_mask

        if index in video.annotations:
            return read_mask(video.annotations[index]).astype(np.int64), True
        return read_mask(video.pseudo[index]).astype(np.int64), False

    def __getitem__(self, index: int) -> ClipSample:
        video = self.videos[index % len(self.videos)]
        rng = _item_rng(self.seed, self.epoch, index)
        for attempt in range(2 * _ATTEMPTS + 1):
            first = None
            if self.pseudo_root is not None and rng.random() < self.labelled_first:
                first = int(rng.choice(video.annotated))
            clip = sample_clip(video.available, self.clip_length, self.max_skip, rng, first)
            nxt = next_index(clip, lambda i: i in video.images)
            images = np.stack([self._image(video, i) for i in clip])
            pairs = [self._label(video, i) for i in clip]
            labels = np.stack([p[0] for p in pairs])
            if images.shape != labels.shape:
                raise InputError(f"{self.root / 'Annotations' / video.name}: masks are {labels.shape[1:]} "
                                 f"but frames are {images.shape[1:]}")
            labelled = torch.tensor([p[1] for p in pairs], dtype=torch.bool)
            if not labels[0].any():
                continue  # no object in this first frame: draw another clip
            data = {"image": torch.from_numpy(images), "label": torch.from_numpy(labels),
                    "next": torch.from_numpy(self._image(video, nxt)[None])}
            out = self._augment(data, labelled, rng, use_fallback=attempt >= _ATTEMPTS)
            ids = select_objects(out["label"][0], self.max_objects, rng)
            if ids:
                return _finish(out, ids, labelled)
        raise InputError(f"{self.root / 'Annotations' / video.name}: no clip starts on a frame with an object")

    def _augment(self, data: dict[str, torch.Tensor], labelled: torch.Tensor, rng: np.random.Generator,
                 use_fallback: bool) -> dict[str, torch.Tensor]:
        seed = int(rng.integers(2**31))
        if use_fallback:
            return self.fallback.set_random_state(seed)(data)
        if bool(labelled.all()):
            return self.augmentation.set_random_state(seed)(data)
        out = self.augmentation.set_random_state(seed).spatial(data)
        t = out["image"].shape[0]
        real = torch.cat([labelled, torch.tensor([True])])  # frame_next goes with the real annotations
        both = torch.cat([out["image"], out["next"]])  # T+1, H, W
        both[real] = self.augmentation.intensity(both[real])
        both[~real] = self.pseudo_augmentation.set_random_state(seed + 1).intensity(both[~real])
        out["image"], out["next"] = both[:t], both[t:]
        return out


def collate_clips(samples: list[ClipSample]) -> dict[str, torch.Tensor]:
    """Stack clips: frames B,T,1,H,W; labels B,T,H,W; num_objects B; labelled B,T; frame_next B,1,H,W.

    Labels are id maps, so clips with fewer objects need no padding of the maps themselves; `num_objects`
    tells the trainer which of the batch-max object channels (max K) are real for each clip.
    """
    if not samples:
        raise ValueError("collate_clips needs at least one sample")
    return {
        "frames": torch.stack([s["frames"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "num_objects": torch.tensor([int(s["num_objects"]) for s in samples], dtype=torch.long),
        "labelled": torch.stack([s["labelled"] for s in samples]),
        "frame_next": torch.stack([s["frame_next"] for s in samples]),
    }
