"""Synthetic angiography v2: determinism, exact labels on the projected geometry, the specified motion ranges,
contrast filling after frame 0, devices, unlabelled distractors, DAVIS export and the hard-protocol supports."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.synth import SynthConfig, SyntheticCineV2, SynthV2Config, generate_cine, write_davis_dataset
from XRayVOSLib.synth.anatomy import LAYER
from XRayVOSLib.synth.protocol import SUPPORT_FILES, write_protocol_supports
from XRayVOSLib.synth.v2.generate import KINDS
from XRayVOSLib.synth.v2.geometry import displacement_stats

SIZE, FRAMES = 256, 24
SCALE = SIZE / 512  # the motion ranges are specified at 512x512
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def cines():
    return {seed: generate_cine(seed, FRAMES, SIZE, SynthV2Config()) for seed in SEEDS}


def labelled_tracks(cine) -> np.ndarray:
    """[T, N, 2] projected centreline points of every labelled object that are in the image at frame 0."""
    parts = []
    for tr in cine.tracks.values():
        parts.append(tr[:, ((tr[0] >= 0) & (tr[0] < SIZE)).all(1)])
    return np.concatenate(parts, 1)


def ring_contrast(frame, labels, exposed, obj) -> float | None:
    """Mean grey 2-5 px around the object (background only) minus the mean inside it."""
    mask = (labels == obj).astype(np.uint8)
    near = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
    far = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))) > 0
    ring = far & ~near & (labels == 0) & exposed
    return float(frame[ring].mean() - frame[mask > 0].mean()) if ring.sum() >= 10 else None


def test_shapes_dtypes_and_metadata(cines):
    for cine in cines.values():
        assert isinstance(cine, SyntheticCineV2)
        assert cine.frames.shape == cine.labels.shape == (FRAMES, SIZE, SIZE)
        assert cine.frames.dtype == np.uint8 and cine.labels.dtype == np.uint8
        assert set(cine.object_kinds.values()) <= set(KINDS)
        assert sorted(cine.object_kinds) == list(range(1, len(cine.object_kinds) + 1))
        assert 0.2 / SCALE * 0.999 <= cine.spacing[0] <= 0.4 / SCALE * 1.001  # 0.2-0.4 mm at 512
        assert round(1 / cine.frame_time, 3) in (7.5, 15.0, 30.0)
        meta = cine.meta()
        assert meta["generator"] == "v2" and 0 <= meta["max_opacification_frame"] < FRAMES
        assert 50 <= meta["motion"]["heart_rate_bpm"] <= 120 and meta["motion"]["bits"] in (8, 10, 12)
        background = cine.frames[0][(cine.labels[0] == 0) & cine.exposed]
        assert 50 < np.median(background) < 200  # MONOCHROME2 mid grey, neither black nor saturated


def test_deterministic_per_seed_and_v1_stays_the_default(cines):
    again = generate_cine(0, FRAMES, SIZE, SynthV2Config())
    assert np.array_equal(again.frames, cines[0].frames) and np.array_equal(again.labels, cines[0].labels)
    assert not np.array_equal(cines[0].frames, cines[1].frames)
    v1 = generate_cine(0, 4, 128)
    assert not isinstance(v1, SyntheticCineV2)
    assert np.array_equal(v1.frames, generate_cine(0, 4, 128, SynthConfig()).frames)


def test_every_object_is_labelled_in_every_frame_and_labels_sit_on_the_geometry(cines):
    for cine in cines.values():
        for t in range(FRAMES):
            counts = np.bincount(cine.labels[t].ravel(), minlength=len(cine.object_kinds) + 1)[1:]
            assert counts.min() >= 6, f"seed {cine.seed} frame {t}: object pixel counts {counts}"
        assert not cine.labels[:, ~cine.exposed].any(), "nothing may be labelled under the shutters"
        # A drawn centreline point lands on its own label, or on an object drawn on top of it.
        for i, tr in cine.tracks.items():
            above = [j for j, k in cine.object_kinds.items() if LAYER[k] > LAYER[cine.object_kinds[i]] or j > i]
            for t in (0, FRAMES // 2, FRAMES - 1):
                p = np.rint(tr[t]).astype(int)
                ok = cine.drawn[i][t] & (p >= 0).all(1) & (p < SIZE).all(1)
                p = p[ok][cine.exposed[p[ok, 1], p[ok, 0]]]
                if len(p) < 10:
                    continue
                lab = cine.labels[t][p[:, 1], p[:, 0]]
                hit = np.isin(lab, [i, *above]).mean()
                assert hit > 0.97, f"seed {cine.seed} object {i} frame {t}: {hit:.3f} of its points on its label"


def test_motion_ranges(cines):
    """Peak displacement from frame 0 (the support) 30-60 px and steps up to ~20 px, at 512x512."""
    peaks, steps, final = [], [], []
    for cine in cines.values():
        tracks = labelled_tracks(cine)
        peak, step = displacement_stats(tracks)
        peaks.append(peak / SCALE)
        steps.append(step / SCALE)
        final.append(np.linalg.norm(tracks[-1] - tracks[0], axis=1).max() / SCALE)
    assert min(peaks) >= 28 and max(peaks) <= 62, f"peak displacement (px at 512): {np.round(peaks, 1)}"
    assert max(steps) <= 21 and max(steps) >= 15, f"largest inter-frame step (px at 512): {np.round(steps, 1)}"
    assert max(final) > 15, f"motion always returns to the support's pose: {np.round(final, 1)}"
    assert len({round(1 / c.frame_time, 1) for c in cines.values()}) >= 2  # several frame rates drawn


def test_the_tree_fills_from_the_ostium_after_frame_0():
    cfg = SynthV2Config(washin_probability=1.0, washin_front=(0.1, 0.2), kinds=("vessel tree",), max_objects=1,
                        probability={"vessel tree": 1.0})
    cine = generate_cine(7, FRAMES, SIZE, cfg)
    area = np.array([(lab == 1).sum() for lab in cine.labels])
    peak = cine.max_opacification_frame
    assert area[0] < 0.6 * area.max(), f"nothing fills after frame 0: areas {area}"
    assert area[peak] >= 0.95 * area.max() and peak > 0
    assert np.all(np.diff(area[: peak + 1]) >= -0.05 * area.max()), f"wash-in is not a filling: {area}"
    # the newly filled part is dark in the image: contrast arrives with the label
    late = (cine.labels[peak] == 1) & (cine.labels[0] == 0) & cine.exposed
    assert cine.frames[0][late].mean() - cine.frames[peak][late].mean() > 8
    drawn = cine.drawn[1]
    assert drawn[peak].sum() > 1.5 * drawn[0].sum()
    # filled points at frame 0 are the proximal ones (the front moves away from the ostium)
    assert drawn[0][:5].all()
    filled = generate_cine(7, 4, SIZE, replace(cfg, washin_probability=0.0))
    assert filled.drawn[1].all()  # no wash-in: the whole tree is opacified (and labelled) from frame 0


def test_devices_present_dark_and_wire_thin():
    cfg = SynthV2Config(probability=dict.fromkeys(KINDS, 1.0))
    cine = generate_cine(3, 6, 512, cfg)
    assert set(cine.object_kinds.values()) == set(KINDS)
    for obj, kind in cine.object_kinds.items():
        c = ring_contrast(cine.frames[2], cine.labels[2], cine.exposed, obj)
        assert c is None or c > 3.0, f"{kind}: only {c} grey darker than around it"
    wire = next(i for i, k in cine.object_kinds.items() if k == "guidewire")
    mask = (cine.labels[2] == wire).astype(np.uint8)
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3)[mask > 0]
    assert mask.sum() > 150 and np.percentile(depth, 98) <= 2.0  # ~3 px wide (wider only where it doubles back)
    cath = next(i for i, k in cine.object_kinds.items() if k == "catheter")
    assert np.linalg.norm(cine.tracks[cath][0][-1] - cine.tracks[1][0][0]) < 8  # engaged at the ostium


def test_distractors_are_drawn_but_never_labelled():
    cfg = SynthV2Config(kinds=("vessel tree",), max_objects=1, probability={"vessel tree": 1.0}, ecg_probability=1.0,
                        other_tree_probability=1.0, pacing_probability=1.0, sternal_probability=1.0,
                        wire_probability=1.0)
    seen = set()
    for seed in (1, 2, 3):
        cine = generate_cine(seed, 2, SIZE, cfg)
        assert set(np.unique(cine.labels).tolist()) == {0, 1} and cine.object_kinds == {1: "vessel tree"}
        assert {"catheter", "guidewire", "other tree", "pacing lead", "sternal wires"} <= set(cine.unlabelled)
        frame = cine.frames[0].astype(np.float32)
        local = cv2.GaussianBlur(frame, (0, 0), 8)
        away = cv2.dilate((cine.labels[0] > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        for name, tracks in cine.unlabelled.items():
            p = np.rint(tracks[0]).astype(int)
            p = p[(p >= 0).all(1) & (p < SIZE).all(1)]
            p = p[away[p[:, 1], p[:, 0]] & cine.exposed[p[:, 1], p[:, 0]]]
            if len(p) < 20:
                continue  # out of view in this projection
            darker = float((frame[p[:, 1], p[:, 0]] < local[p[:, 1], p[:, 0]]).mean())
            assert darker > 0.6, f"seed {seed}: {name} is not visible ({darker:.2f} of its points darker)"
            assert not cine.labels[0][p[:, 1], p[:, 0]].any()
            seen.add(name)
    assert {"other tree", "pacing lead", "sternal wires", "catheter"} <= seen


def test_bad_config():
    with pytest.raises(InputError):
        generate_cine(0, 2, 128, SynthV2Config(min_objects=3, max_objects=2))
    with pytest.raises(InputError):
        generate_cine(0, 2, 128, SynthV2Config(kinds=("vessel tree", "tumour")))
    with pytest.raises(InputError):
        generate_cine(0, 2, 128, SynthV2Config(bits=(16,)))
    with pytest.raises(InputError):
        generate_cine(0, 2, 128, SynthV2Config(peak_px=(60.0, 30.0)))
    with pytest.raises(InputError):
        SynthV2Config.preset("impossible")
    for name in ("easy", "hard"):
        assert generate_cine(4, 3, 128, SynthV2Config.preset(name)).frames.shape == (3, 128, 128)


def test_davis_export_supports_and_evaluate(tmp_path, capsys):
    root = tmp_path / "hard"
    assert main(["synth", "--generator", "v2", "--out", str(root), "--videos", "2", "--frames", "8", "--size", "128",
                 "--seed", "9000"]) == 0
    meta = json.loads((root / "meta.json").read_text())
    assert meta["generator"] == "XRayVOSLib.synth.v2" and meta["config"]["generator"] == "v2"
    for name, entry in meta["videos"].items():
        cine = generate_cine(entry["seed"], 8, 128, SynthV2Config())
        assert entry["max_opacification_frame"] == cine.max_opacification_frame
        for t in range(8):
            with Image.open(root / "Annotations" / name / f"{t:05d}.png") as im:
                assert im.mode == "P" and np.array_equal(np.asarray(im), cine.labels[t])
            with Image.open(root / "JPEGImages" / name / f"{t:05d}.png") as im:
                assert np.array_equal(np.asarray(im), cine.frames[t])
    files = {name: json.loads((root / name).read_text()) for name in SUPPORT_FILES}
    for video, entry in meta["videos"].items():
        peak = entry["max_opacification_frame"]
        assert files["supports_first.json"][video] == [0]
        assert files["supports_max_opacification.json"][video] == [peak]
        assert files["supports_two.json"][video] == sorted({0, peak or 4})
    capsys.readouterr()
    for name in SUPPORT_FILES:  # evaluate reads each protocol file
        assert main(["evaluate", "--data", str(root), "--supports", str(root / name), "--methods", "copy"]) == 0
        assert "2 videos" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["synth", "--generator", "v3", "--out", str(tmp_path / "x")])
    assert bad.value.code == 2
    with pytest.raises(InputError):
        write_protocol_supports(tmp_path / "nothing")


def test_python_api_writer_and_training_loader(tmp_path):
    names = write_davis_dataset(tmp_path / "ds", 1, 5, 96, seed=1, config=SynthV2Config())
    assert names == ["synth_0000"]
    from XRayVOSLib.training.data import SyntheticClipDataset

    data = SyntheticClipDataset(2, size=(96, 96), clip_length=3, synth_frames=8, synth_config=SynthV2Config())
    item = data[0]
    assert item["frames"].shape == (3, 1, 96, 96) and item["num_objects"] >= 1


def test_realism_tool_on_the_real_phantom(phantom_dir, tmp_path):
    """tools/realism.py reads the real XA DICOMs, measures both generators and writes the side-by-side PNG."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "side.png"
    run = subprocess.run([sys.executable, str(repo / "tools" / "realism.py"), "--phantom", str(phantom_dir),
                          "--videos", "1", "--frames", "4", "--out", str(out)], capture_output=True, text=True,
                         cwd=repo, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines() if line.split()[:1] in (["real"],
                                                                                                     ["v2"], ["v1"])}
    assert set(rows) == {"real", "v2", "v1"}
    real_noise, v2_noise = float(rows["real"][3]), float(rows["v2"][3])
    assert 1.0 < real_noise < 30.0 and 0.0 < v2_noise  # the phantom's detector noise is measured, not zero
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] == 512 and picture.shape[1] > 1024
    # left half is the real frame: it matches a decoded phantom frame's grey levels
    from XRayVOSLib.io import read_cine

    first = np.asarray(read_cine(sorted(phantom_dir.glob("*.dcm"))[0]).frames)[0]
    assert np.abs(picture[:, :512, 0].astype(int) - first.astype(int)).max() <= 1
