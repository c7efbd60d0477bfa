"""Synthetic angiography cines: determinism, exact and visible ground truth, motion, contrast, export."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.synth import ALL_KINDS, SynthConfig, generate_cine, write_davis_dataset
from XRayVOSLib.synth.dataset import video_name, video_seed

SIZE, FRAMES = 256, 16
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def cines():
    return {seed: generate_cine(seed, num_frames=FRAMES, size=SIZE) for seed in SEEDS}


def ring_contrast(frame: np.ndarray, labels: np.ndarray, exposed: np.ndarray, obj: int) -> float | None:
    """Mean grey in a ring 2-5 px around the object (background only) minus the mean inside it."""
    mask = (labels == obj).astype(np.uint8)
    near = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
    far = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))) > 0
    ring = far & ~near & (labels == 0) & exposed
    if ring.sum() < 10:
        return None
    return float(frame[ring].mean() - frame[mask > 0].mean())


def vessel_id(cine) -> int:
    return next(i for i, kind in cine.object_kinds.items() if kind == "vessel tree")


def test_shapes_dtypes_and_metadata(cines):
    cine = cines[0]
    assert cine.frames.shape == cine.labels.shape == (FRAMES, SIZE, SIZE)
    assert cine.frames.dtype == np.uint8 and cine.labels.dtype == np.uint8
    assert 1 <= len(cine.object_names) <= 5
    assert sorted(cine.object_names) == list(range(1, len(cine.object_names) + 1))
    assert set(cine.object_kinds.values()) <= set(ALL_KINDS)
    assert cine.spacing[0] == cine.spacing[1] and 0.3 < cine.spacing[0] < 1.0  # 0.6 mm at 256 (zoom 0.85-1.2)
    assert cine.frame_time == pytest.approx(1 / 15)
    assert cine.exposed.shape == (SIZE, SIZE) and cine.exposed.mean() > 0.5
    # MONOCHROME2 look: the exposed background is mid-to-bright grey, not black or saturated.
    background = cine.frames[0][(cine.labels[0] == 0) & cine.exposed]
    assert 70 < np.median(background) < 230


def test_deterministic_per_seed(cines):
    again = generate_cine(0, num_frames=FRAMES, size=SIZE)
    assert np.array_equal(again.frames, cines[0].frames)
    assert np.array_equal(again.labels, cines[0].labels)
    assert again.object_names == cines[0].object_names
    assert not np.array_equal(cines[0].frames, cines[1].frames)
    assert not np.array_equal(cines[0].labels, cines[1].labels)


def test_ids_consistent_across_frames(cines):
    for cine in cines.values():
        ids = set(cine.object_names)
        for t in range(FRAMES):
            present = set(np.unique(cine.labels[t]).tolist()) - {0}
            assert present == ids, f"seed {cine.seed} frame {t}: ids {present} != {ids}"
            counts = np.bincount(cine.labels[t].ravel(), minlength=max(ids) + 1)
            assert counts[1:].min() >= 10, f"seed {cine.seed} frame {t}: an object has {counts[1:].min()} px"
        assert not cine.labels[:, ~cine.exposed].any(), "nothing may be labelled under the shutters"


def test_every_object_is_darker_than_its_surroundings(cines):
    checked = set()
    for cine in cines.values():
        for t in (0, FRAMES // 2, FRAMES - 1):
            for obj, kind in cine.object_kinds.items():
                contrast = ring_contrast(cine.frames[t], cine.labels[t], cine.exposed, obj)
                if contrast is None:
                    continue
                assert contrast > 3.0, f"seed {cine.seed} frame {t}: {kind} only {contrast:.1f} grey darker"
                checked.add(kind)
    assert {"vessel tree", "guidewire"} <= checked


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_alone_renders_visibly(kind):
    config = SynthConfig(kinds=(kind,), min_objects=1, max_objects=1, vessel_probability=1.0)
    cine = generate_cine(11, num_frames=4, size=192, config=config)
    assert cine.object_kinds == {1: kind}
    for t in range(4):
        assert (cine.labels[t] == 1).sum() >= 6
        contrast = ring_contrast(cine.frames[t], cine.labels[t], cine.exposed, 1)
        assert contrast is None or contrast > 3.0, f"{kind} frame {t}: {contrast}"


@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if k != "catheter"])  # a hollow catheter's walls are darkest
def test_labels_sit_exactly_on_the_structures(kind):
    """The mask is darker than the same mask moved by one pixel in any direction: no offset, no blur."""
    config = SynthConfig(kinds=(kind,), min_objects=1, max_objects=1, vessel_probability=1.0,
                         unlabelled_catheter_probability=0.0, distractor_probability=0.0)
    for seed in range(3):
        cine = generate_cine(seed, num_frames=4, size=192, config=config)
        for t in (0, 3):
            frame, mask = cine.frames[t].astype(np.float64), cine.labels[t] == 1
            inside = frame[mask].mean()
            for shift in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                moved = np.roll(mask, shift, axis=(0, 1))
                assert frame[moved].mean() > inside, f"{kind} seed {seed} frame {t}: shifted by {shift} is darker"


def test_motion_exists_and_is_smooth(cines):
    for cine in cines.values():
        if "vessel tree" not in cine.object_kinds.values():
            continue
        vessel = cine.labels == vessel_id(cine)
        assert not np.array_equal(vessel[0], vessel[10])
        ious = [(vessel[t] & vessel[t + 1]).sum() / (vessel[t] | vessel[t + 1]).sum() for t in range(FRAMES - 1)]
        assert np.mean(ious) > 0.3 and min(ious) > 0.1, f"seed {cine.seed}: consecutive IoU {np.round(ious, 2)}"


def test_contrast_washes_in():
    config = SynthConfig(contrast_onset=(0.4, 0.5), contrast_washout=(1.6, 2.0), contrast_floor=(0.25, 0.3),
                         kinds=("vessel tree",), max_objects=1, vessel_probability=1.0)
    cine = generate_cine(5, num_frames=FRAMES, size=SIZE, config=config)
    contrast = [ring_contrast(cine.frames[t], cine.labels[t], cine.exposed, 1) for t in range(FRAMES)]
    assert contrast[0] > 0  # faint but still there
    assert contrast[0] < 0.6 * max(contrast), f"no wash-in: {np.round(contrast, 1)}"
    assert cine.contrast[0] < 0.6 * cine.contrast.max()
    # and the default draws vary: some cines have a bolus that rises or falls within the cine
    spans = [generate_cine(s, num_frames=FRAMES, size=96).contrast for s in range(6)]
    assert any(c.max() > 1.5 * c.min() for c in spans)


def test_guidewire_is_thin():
    config = SynthConfig(kinds=("vessel tree", "guidewire"), min_objects=2, max_objects=2)
    cine = generate_cine(2, num_frames=3, size=512, config=config)
    wire = next(i for i, k in cine.object_kinds.items() if k == "guidewire")
    mask = (cine.labels[1] == wire).astype(np.uint8)
    assert mask.sum() > 150  # long
    assert cv2.distanceTransform(mask, cv2.DIST_L2, 3).max() <= 2.0  # but at most ~3 px wide


def test_presets_and_bad_config():
    for name in ("easy", "hard"):
        cine = generate_cine(4, num_frames=3, size=128, config=SynthConfig.preset(name))
        assert cine.frames.shape == (3, 128, 128)
    assert len(generate_cine(4, num_frames=3, size=128, config=SynthConfig.preset("hard")).object_names) >= 3
    with pytest.raises(InputError):
        SynthConfig.preset("impossible")
    with pytest.raises(InputError):
        generate_cine(0, num_frames=2, size=128, config=SynthConfig(min_objects=3, max_objects=2))
    with pytest.raises(InputError):
        generate_cine(0, num_frames=2, size=128, config=SynthConfig(kinds=("vessel tree", "tumour")))
    with pytest.raises(InputError):
        generate_cine(0, num_frames=2, size=128, config=replace(SynthConfig(), noise=(5.0, 1.0)))
    with pytest.raises(InputError):
        generate_cine(0, num_frames=2, size=128, config=SynthConfig(kinds=("balloon", "stent"), min_objects=3))
    with pytest.raises(InputError):
        generate_cine(0, num_frames=0, size=128)
    with pytest.raises(InputError):
        generate_cine(0, num_frames=2, size=16)


def test_davis_export_round_trip(tmp_path):
    names = write_davis_dataset(tmp_path / "ds", num_videos=2, num_frames=4, size=128, seed=3)
    assert names == ["synth_0000", "synth_0001"]
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    for i, name in enumerate(names):
        frames = sorted((tmp_path / "ds" / "JPEGImages" / name).glob("*.png"))
        masks = sorted((tmp_path / "ds" / "Annotations" / name).glob("*.png"))
        assert [p.name for p in frames] == [p.name for p in masks] == [f"{t:05d}.png" for t in range(4)]
        entry = meta["videos"][name]
        assert entry["seed"] == video_seed(3, i)
        cine = generate_cine(entry["seed"], num_frames=4, size=128)
        assert entry["object_names"] == {str(k): v for k, v in cine.object_names.items()}
        assert entry["frame_time"] == pytest.approx(cine.frame_time) and entry["spacing"][0] > 0
        for t in range(4):
            with Image.open(masks[t]) as im:
                assert im.mode == "P"
                assert im.getpalette()[3:12] == [128, 0, 0, 0, 128, 0, 128, 128, 0]
                assert np.array_equal(np.asarray(im), cine.labels[t])
            with Image.open(frames[t]) as im:
                assert im.mode == "L"
                assert np.array_equal(np.asarray(im), cine.frames[t])
    # more videos extend the dataset: the first two are unchanged
    write_davis_dataset(tmp_path / "more", num_videos=3, num_frames=4, size=128, seed=3)
    a = (tmp_path / "ds" / "Annotations" / video_name(1) / "00002.png").read_bytes()
    b = (tmp_path / "more" / "Annotations" / video_name(1) / "00002.png").read_bytes()
    assert a == b
    assert (tmp_path / "more" / "JPEGImages" / video_name(2) / "00003.png").is_file()


def test_cli_synth_and_demo(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--videos", "2", "--frames", "3", "--size", "96",
                 "--seed", "7", "--preset", "easy"]) == 0
    assert len(list((tmp_path / "s" / "Annotations" / "synth_0001").glob("*.png"))) == 3
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["seed"] == 7
    assert main(["synth", "--out", str(tmp_path / "bad"), "--size", "8"]) == 2
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "5", "--size", "128"]) == 0
    out = capsys.readouterr().out
    assert "preview.png" in out
    demo = tmp_path / "d"
    assert np.load(demo / "cine.npy").shape == (5, 128, 128)
    assert len(list((demo / "frames").glob("*.png"))) == len(list((demo / "ground_truth").glob("*.png"))) == 5
    preview = cv2.imread(str(demo / "preview.png"))
    assert preview is not None and preview.shape[1] >= 4 * 128


def test_generation_speed_report():
    """Prints the generation time (run with -s to see it); asserts only that it finished."""
    start = time.perf_counter()
    cine = generate_cine(21, num_frames=10, size=384)
    took = time.perf_counter() - start
    print(f"\nsynth: {took / 10 * 1e3:.1f} ms per 384x384 frame ({len(cine.object_names)} objects)")
    assert cine.frames.shape[0] == 10
