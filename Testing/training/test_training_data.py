"""Training data: synthetic and DAVIS clip datasets, clip sampling, augmentation, collate, cutmix."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from XRayVOSLib.errors import InputError
from XRayVOSLib.io import write_mask
from XRayVOSLib.synth import write_davis_dataset
from XRayVOSLib.training.augment import build_augmentation, cutmix
from XRayVOSLib.training.data import (
    DavisClipDataset,
    SyntheticClipDataset,
    collate_clips,
    max_skip_schedule,
    sample_clip,
)


def _check_sample(s: dict, t: int, size: tuple[int, int], max_objects: int) -> None:
    assert s["frames"].shape == (t, 1, *size) and s["frames"].dtype == torch.float32
    assert 0.0 <= s["frames"].min() and s["frames"].max() <= 1.0 and s["frames"].std() > 0.01
    assert s["labels"].shape == (t, *size) and s["labels"].dtype == torch.int64
    assert s["frame_next"].shape == (1, *size) and s["frame_next"].dtype == torch.float32
    assert s["labelled"].shape == (t,) and s["labelled"].dtype == torch.bool
    k = s["num_objects"]
    assert 1 <= k <= max_objects
    assert 0 <= s["labels"].min() and s["labels"].max() <= k
    assert set(range(1, k + 1)) <= set(s["labels"][0].unique().tolist())  # every object is in frame 0


# ---------------------------------------------------------------- synthetic


def test_synthetic_items_shapes_ranges_and_determinism() -> None:
    ds = SyntheticClipDataset(4, size=(96, 128), clip_length=3, max_objects=2, seed=1, synth_frames=6)
    a = ds[0]
    _check_sample(a, 3, (96, 128), 2)
    assert a["labelled"].all()
    b = ds[0]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["labels"], b["labels"])
    ds.set_epoch(1)
    assert ds.cine_seed(0) != SyntheticClipDataset(4, seed=1).cine_seed(0)
    assert not torch.equal(ds[0]["frames"], a["frames"])


def test_synthetic_item_time_at_320(capsys) -> None:
    ds = SyntheticClipDataset(3, size=(320, 320), augment="weak")
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for i in range(3):
        _check_sample(ds[i], 3, (320, 320), 3)
    with capsys.disabled():
        print(f"\nSyntheticClipDataset 320x320 weak: {(time.perf_counter() - start_wall) / 3:.3f} s/item wall, "
              f"{(time.process_time() - start_cpu) / 3:.3f} s/item CPU")


def test_max_skip_schedule_grows_then_shrinks() -> None:
    values = [max_skip_schedule(s, 1000, 15) for s in range(0, 1001, 50)]
    assert values[0] < 15 and max(values) == 15
    peak = values.index(15)
    assert all(a <= b for a, b in itertools.pairwise(values[: peak + 1]))
    assert values[0] < values[peak // 2] < 15
    assert 1 <= values[-1] < 15


def test_sample_clip_respects_max_skip_and_sparse_indices() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        clip = sample_clip(np.arange(30), 3, 4, rng)
        gaps = np.diff(clip)
        assert (np.abs(gaps) >= 1).all() and (np.abs(gaps) <= 4).all()
        assert np.all(gaps > 0) or np.all(gaps < 0)  # time order, forward or reversed
    sparse = np.arange(0, 30, 5)
    for _ in range(20):  # skips smaller than the annotation spacing: nearest annotated frame
        clip = sample_clip(sparse, 3, 2, rng)
        assert set(clip) <= set(sparse.tolist()) and np.all(np.abs(np.diff(clip)) == 5)
    assert sample_clip(np.array([3, 9]), 3, 10, rng) in ([3, 9, 3], [9, 3, 9])
    assert sample_clip(np.arange(10), 3, 3, rng, first=9)[0] == 9
    for first in range(3):  # no room either way: walks back and forth from `first`
        clip = sample_clip(np.arange(3), 3, 1, rng, first=first)
        assert clip[0] == first and set(clip) <= {0, 1, 2} and np.all(np.abs(np.diff(clip)) == 1)


# ---------------------------------------------------------------- DAVIS


@pytest.fixture(scope="module")
def sparse_davis(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    root = tmp_path_factory.mktemp("davis")
    write_davis_dataset(root, num_videos=2, num_frames=12, size=96, seed=0)
    pseudo = root / "pseudo"
    shutil.copytree(root / "Annotations", pseudo)  # dense "pseudo-labels" = the full ground truth
    for p in (root / "Annotations").rglob("*.png"):
        if int(p.stem) % 5:
            p.unlink()
    frames = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
                       for p in sorted((root / "JPEGImages" / "synth_0000").glob("*.png"))]) / 255.0
    return root, pseudo, frames


def _frame_index(frame: torch.Tensor, originals: np.ndarray) -> int:
    err = np.abs(originals - frame.numpy()[None]).mean(axis=(1, 2))
    assert err.min() < 1e-3, "frame not found among the originals"
    return int(err.argmin())


def test_davis_sparse_samples_only_annotated_frames(sparse_davis) -> None:
    root, _pseudo, originals = sparse_davis
    ds = DavisClipDataset(root, size=(96, 96), augment="none", videos=["synth_0000"], repeats=8)
    assert len(ds) == 8
    used = set()
    for i in range(len(ds)):
        s = ds[i]
        _check_sample(s, 3, (96, 96), 3)
        used |= {_frame_index(f[0], originals) for f in s["frames"]}
        assert s["labelled"].all()
    assert used <= {0, 5, 10} and len(used) >= 2


def test_davis_pseudo_uses_all_frames_and_flags_labelled(sparse_davis) -> None:
    root, pseudo, originals = sparse_davis
    ds = DavisClipDataset(root, size=(96, 96), augment="none", pseudo_augment="none", pseudo_root=pseudo,
                          videos=["synth_0000"], repeats=12)
    used = set()
    for i in range(len(ds)):
        s = ds[i]
        _check_sample(s, 3, (96, 96), 3)
        idx = [_frame_index(f[0], originals) for f in s["frames"]]
        used |= set(idx)
        assert s["labelled"].tolist() == [t % 5 == 0 for t in idx]
    assert used - {0, 5, 10}, "pseudo-labelled frames were never used"


def test_davis_pseudo_frames_get_strong_intensity_only(sparse_davis) -> None:
    root, pseudo, _ = sparse_davis
    ds = DavisClipDataset(root, size=(96, 96), augment="none", pseudo_augment="strong", pseudo_root=pseudo,
                          videos=["synth_0000"], repeats=12)
    reference = DavisClipDataset(root, size=(96, 96), augment="none", pseudo_augment="none", pseudo_root=pseudo,
                                 videos=["synth_0000"], repeats=12)
    pseudo_changed = 0
    for i in range(len(ds)):
        s, r = ds[i], reference[i]
        assert torch.equal(s["labels"], r["labels"])  # same clip, same (absent) spatial transform
        for t, flag in enumerate(s["labelled"].tolist()):
            changed = not torch.allclose(s["frames"][t], r["frames"][t])
            assert not (flag and changed)  # real annotations keep the weak ("none" here) intensity
            pseudo_changed += int(changed and not flag)
    assert pseudo_changed > 0


def _write_squares_video(root: Path, name: str, num_frames: int, annotated: list[int], ids=(3, 7)) -> None:
    """64x64 frames, background grey 20 + 10 t (encodes the frame index); bright squares labelled `ids`."""
    for t in range(num_frames):
        image = np.full((64, 64), 20 + 10 * t, np.uint8)
        label = np.zeros((64, 64), np.uint8)
        image[10 + t : 26 + t, 10:26], label[10 + t : 26 + t, 10:26] = 250, ids[0]
        image[36:54, 30 + t : 48 + t], label[36:54, 30 + t : 48 + t] = 200, ids[1]
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "JPEGImages" / name / f"{t:05d}.png"), image)
        if t in annotated:
            write_mask(root / "Annotations" / name / f"{t:05d}.png", label)


def test_davis_two_annotated_frames_noncontiguous_ids_and_frame_next(tmp_path: Path) -> None:
    _write_squares_video(tmp_path, "two", 8, annotated=[2, 6])
    ds = DavisClipDataset(tmp_path, size=(64, 64), augment="none", repeats=6)
    for i in range(len(ds)):
        s = ds[i]
        _check_sample(s, 3, (64, 64), 3)
        idx = [round((float(f[0, 0, 0]) * 255 - 20) / 10) for f in s["frames"]]
        assert idx in ([2, 6, 2], [6, 2, 6])
        assert s["num_objects"] == 2 and set(s["labels"].unique().tolist()) == {0, 1, 2}
        nxt = round((float(s["frame_next"][0, 0, 0]) * 255 - 20) / 10)
        assert nxt == idx[1] + (1 if idx[1] > idx[0] else -1)  # after frame 1 in the clip's direction


def test_weak_augmentation_keeps_labels_on_bright_pixels() -> None:
    image = torch.zeros(3, 96, 96)
    label = torch.zeros(3, 96, 96, dtype=torch.long)
    for t in range(3):
        image[t, 30 + t : 60 + t, 25:55], label[t, 30 + t : 60 + t, 25:55] = 0.9, 1
    for strength in ("weak", "strong"):
        aug = build_augmentation(strength, (80, 80))
        for seed in range(6):
            out = aug.set_random_state(seed)({"image": image, "label": label})
            assert out["label"].dtype == torch.int64 and set(out["label"].unique().tolist()) <= {0, 1}
            inside, outside = out["image"][out["label"] == 1], out["image"][out["label"] == 0]
            assert inside.numel() > 100
            if strength == "weak":
                assert inside.mean() > 0.6 and outside.mean() < 0.2
            else:  # cut-out and strong jitter may darken part of the square, never swap the sides
                assert inside.mean() > outside.mean() + 0.2


def test_davis_errors_name_the_folder(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(InputError, match="JPEGImages"):
        DavisClipDataset(tmp_path)
    _write_squares_video(tmp_path, "bare", 4, annotated=[])
    with pytest.raises(InputError, match="Annotations/bare"):
        DavisClipDataset(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        DavisClipDataset(tmp_path / "missing")


# ---------------------------------------------------------------- collate and cutmix


def test_collate_stacks_and_reports_objects(tmp_path: Path) -> None:
    _write_squares_video(tmp_path, "a", 4, annotated=[0, 1, 2, 3])
    _write_squares_video(tmp_path, "b", 4, annotated=[0, 1, 2, 3], ids=(5, 5))  # one object
    ds = DavisClipDataset(tmp_path, size=(64, 64), augment="weak", clip_length=2)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 2, 1, 64, 64) and batch["labels"].shape == (2, 2, 64, 64)
    assert batch["labelled"].shape == (2, 2) and batch["frame_next"].shape == (2, 1, 64, 64)
    assert batch["num_objects"].tolist() == [2, 1]
    assert batch["labels"][1].max() <= 1 and batch["labels"][0, 0].max() == 2
    k = int(batch["num_objects"].max())  # object channels padded to the batch max
    one_hot = torch.nn.functional.one_hot(batch["labels"], k + 1)
    assert one_hot[1, ..., 2].sum() == 0  # the padded channel of the 1-object clip is empty


def test_cutmix_pastes_donor_box_and_clears_its_labels() -> None:
    frames = torch.stack([torch.full((3, 1, 32, 32), 0.2), torch.full((3, 1, 32, 32), 0.8)])
    labels = torch.ones(2, 3, 32, 32, dtype=torch.long)
    same_f, same_l = cutmix(frames, labels, p=0.0)
    assert torch.equal(same_f, frames) and torch.equal(same_l, labels)
    mixed_f, mixed_l = cutmix(frames, labels, p=1.0, generator=torch.Generator().manual_seed(0))
    for i, donor_value in ((0, 0.8), (1, 0.2)):
        box = mixed_l[i] == 0  # T, H, W
        assert 0.04 * 32 * 32 <= box[0].sum() <= 0.3 * 32 * 32
        assert all(torch.equal(box[0], box[t]) for t in range(3))  # same box in every frame
        assert torch.allclose(mixed_f[i, :, 0][box], torch.tensor(donor_value))
        assert torch.allclose(mixed_f[i, :, 0][~box], frames[i, 0, 0, 0, 0])
    assert torch.equal(frames[0], torch.full((3, 1, 32, 32), 0.2))  # inputs untouched
