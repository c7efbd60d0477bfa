"""Incremental re-propagation (issue 22, part 3) with the shipped network: a new or corrected support at c
recomputes only the passes that start at c, and the result is bit-identical to a full run with the same
supports (so frames outside the affected span are also bit-identical to the last run); a changed setting,
model or cine invalidates the cache; the CLI and the worker use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from XRayVOSLib.errors import CancelledError
from XRayVOSLib.io import write_mask
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.propagation.cache import CACHE_FOLDER, MANIFEST, PassCache
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import generate_cine

FRAMES, SIZE = 60, 96
pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(default_model_path() is None, reason="models/ ships no checkpoint here"),
]


@pytest.fixture(scope="module")
def cine():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the v1 generator's exp()
        return generate_cine(4242, FRAMES, SIZE)


@pytest.fixture(scope="module")
def shipped():
    from XRayVOSLib.inference.propagator import Propagator

    return Propagator.load(None)


def assert_same(a, b) -> None:
    """Bit-identical labels, estimated J and signals (NaN where NaN)."""
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    for name in a.signals:
        np.testing.assert_array_equal(a.signals[name], b.signals[name], err_msg=name)


def test_a_correction_recomputes_only_its_passes_and_equals_a_full_run(shipped, cine, tmp_path: Path) -> None:
    labels = cine.labels
    first = shipped.propagate_result(cine.frames, {0: labels[0], 30: labels[30]}, cache=tmp_path)
    assert first.steps["computed"] == 29 + 29 + 29 and first.steps["reused"] == 0
    corrected = {0: labels[0], 30: labels[30], 45: labels[45]}
    again = shipped.propagate_result(cine.frames, corrected, cache=tmp_path)
    # Only the two passes from 45 ran (46..59 would be 14, 44..31 is 14); the pass 30 -> 44 is the first part
    # of the earlier 30 -> 59 and is read back.
    assert again.steps["computed"] == 14 + 14, again.steps
    assert again.steps["reused"] == 29 + 29 + 14 and again.steps["cache"] == "cache used"
    full = shipped.propagate_result(cine.frames, corrected)
    assert_same(again, full)
    # Before the affected span (31..59) nothing moved, to the bit; inside it the correction changed frames.
    np.testing.assert_array_equal(again.labels[:31], first.labels[:31])
    np.testing.assert_array_equal(again.confidence[:31], first.confidence[:31])
    assert not np.array_equal(again.labels[31:], first.labels[31:])
    np.testing.assert_array_equal(again.labels[45], labels[45])
    assert again.confidence[45].tolist() == [1.0] * len(again.object_ids)

    # Taking the correction back is free: the earlier 30 -> 59 pass was kept (the shorter one began it).
    undone = shipped.propagate_result(cine.frames, {0: labels[0], 30: labels[30]}, cache=tmp_path)
    assert undone.steps["computed"] == 0 and undone.steps["reused"] == 87
    assert_same(undone, first)


def test_a_corrected_support_recomputes_the_passes_from_it(shipped, cine, tmp_path: Path) -> None:
    labels = cine.labels
    shipped.propagate_result(cine.frames, {0: labels[0], 30: labels[30]}, cache=tmp_path)
    edited = labels[30].copy()
    edited[edited == edited.max()] = 0  # the user erased the last object and painted a square of the first
    edited[10:20, 10:20] = 1
    again = shipped.propagate_result(cine.frames, {0: labels[0], 30: edited}, cache=tmp_path)
    assert again.steps["computed"] == 29 + 29 and again.steps["reused"] == 29  # the pass from 0 is kept
    assert_same(again, shipped.propagate_result(cine.frames, {0: labels[0], 30: edited}))


@pytest.mark.parametrize("change", ["setting", "model", "cine", "objects"])
def test_a_changed_setting_model_cine_or_object_set_invalidates_the_cache(shipped, cine, tmp_path: Path,
                                                                          change: str) -> None:
    from XRayVOSLib.inference.propagator import Propagator

    frames, supports = cine.frames[:12], {0: cine.labels[0]}
    shipped.propagate_result(frames, supports, cache=tmp_path)
    method, expected = shipped, ""
    if change == "setting":
        method, expected = Propagator.load(None, shipped.settings.replace(memory_every=3)), "the settings changed"
    elif change == "model":
        network = Propagator.load(None).network
        with __import__("torch").no_grad():
            next(network.parameters()).mul_(1.01)
        method, expected = Propagator.load(network, shipped.settings), "model_sha256"
    elif change == "cine":
        frames = frames.copy()
        frames[7, 3, 3] ^= 1  # one pixel of one frame
        expected = "the cine changed"
    else:
        supports = {0: np.where(cine.labels[0] == 1, 9, cine.labels[0]).astype(np.uint8)}
        expected = "the object ids changed"
    result = method.propagate_result(frames, supports, cache=tmp_path)
    assert result.steps["reused"] == 0 and result.steps["computed"] == 11
    assert expected in result.steps["cache"], result.steps
    assert_same(result, method.propagate_result(frames, supports))


def test_a_cancelled_run_leaves_the_cache_as_it_was(shipped, cine, tmp_path: Path) -> None:
    frames = cine.frames[:12]
    shipped.propagate_result(frames, {0: cine.labels[0]}, cache=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    cancel = threading.Event()
    with pytest.raises(CancelledError):
        shipped.propagate_result(frames, {0: cine.labels[0], 6: cine.labels[6]}, cache=tmp_path, cancel=cancel,
                                 progress=lambda done, total: done == 8 and cancel.set())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary or half pass file


def test_a_cache_folder_that_is_not_one_is_a_one_line_error(shipped, cine, tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(Exception, match=f"{MANIFEST}: not a readable XRayVOS pass cache"):
        shipped.propagate_result(cine.frames[:4], {0: cine.labels[0]}, cache=PassCache(tmp_path))


def _propagate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "XRayVOSLib", "propagate", *args, "--quiet"], capture_output=True,
                          text=True, env=env, timeout=600)


def test_propagate_into_an_earlier_result_recomputes_only_the_correction(cine, tmp_path: Path) -> None:
    frames = cine.frames[:24]
    np.save(tmp_path / "cine.npy", frames)
    for t in (0, 12, 18):
        write_mask(tmp_path / f"m{t}.png", cine.labels[t])
    out, base = tmp_path / "out", ["--support", f"0:{tmp_path / 'm0.png'}", "--support", f"12:{tmp_path / 'm12.png'}"]
    assert _propagate(str(tmp_path / "cine.npy"), *base, "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    first = json.loads((out / "run.json").read_text())
    assert first["incremental"]["computed"] == 11 + 11 + 11 and first["incremental"]["resumed_from"] is None
    proc = _propagate(str(tmp_path / "cine.npy"), *base, "--support", f"18:{tmp_path / 'm18.png'}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["incremental"]["computed"] == 5 + 5 and record["incremental"]["reused"] == 11 + 11 + 5
    assert record["incremental"]["resumed_from"] == str(out)
    after = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert all(after[f"{t:05d}.png"] == before[f"{t:05d}.png"] for t in range(13))  # outside the span: the bytes
    assert sorted(p.name for p in (out / CACHE_FOLDER).iterdir())[0] == MANIFEST

    # --resume-from another result: the same passes are read from there into a new folder.
    other = tmp_path / "other"
    proc = _propagate(str(tmp_path / "cine.npy"), *base, "--out", str(other), "--resume-from", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((other / "run.json").read_text())["incremental"]["computed"] == 0
    assert {p.name: p.read_bytes() for p in other.glob("*.png")} == before
    # A folder without a cache is refused in one line, before anything runs.
    proc = _propagate(str(tmp_path / "cine.npy"), *base, "--out", str(tmp_path / "third"), "--resume-from",
                      str(tmp_path))
    assert proc.returncode == 2 and "not an earlier result" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "third").exists()


def test_the_worker_carries_the_confidence_and_uses_its_cache(cine, tmp_path: Path) -> None:
    frames = cine.frames[:10]
    np.save(tmp_path / "frames.npy", frames)
    job = {"version": 2, "frames": "frames.npy", "supports": "supports.npz", "output": "labels.npy", "model": None,
           "settings": {}, "cache": "cache", "confidence": "confidence.npy"}
    events = []
    for supports in ({"0": cine.labels[0]}, {"0": cine.labels[0], "6": cine.labels[6]}):
        np.savez(tmp_path / "supports.npz", **supports)
        (tmp_path / "job.json").write_text(json.dumps(job), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "XRayVOSLib.worker", "--job", str(tmp_path / "job.json")],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        events.append(json.loads(proc.stdout.splitlines()[-1]))
    done = events[-1]
    assert done["event"] == "done" and done["supports"] == [0, 6] and done["objects"] == sorted(
        int(v) for v in np.unique(cine.labels[0]) if v)
    assert done["confidence"] == str(tmp_path / "confidence.npy")
    confidence = np.load(done["confidence"], allow_pickle=False)
    assert confidence.shape == (10, len(done["objects"])) and confidence.dtype == np.float32
    assert (confidence[[0, 6]] == 1.0).all()
    assert events[0]["incremental"]["computed"] == 9 and done["incremental"]["computed"] == 5 + 3
    assert done["incremental"]["reused"] == 5  # frames 1..5 of the first run's forward pass
    labels = np.load(done["output"], allow_pickle=False)
    from XRayVOSLib.inference.propagator import Propagator

    expected = Propagator.load(None, RunSettings.from_model(None)).propagate_result(
        frames, {0: cine.labels[0], 6: cine.labels[6]})
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_array_equal(confidence, expected.confidence)
