"""The research diagnostics in tools/ (card, resolution, confusion, drift) on a small synthetic DAVIS-layout set.

They are scripts, not part of the package: `python tools/<name>.py` puts tools/ first on sys.path, so this
test does the same and imports them by their file names.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from XRayVOSLib.errors import InputError
from XRayVOSLib.evaluation import evaluate_methods
from XRayVOSLib.io import read_mask_folder
from XRayVOSLib.methods import make_method
from XRayVOSLib.metrics import j_measure
from XRayVOSLib.settings import RunSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / "tools"
VIDEOS = ["synth_0000", "synth_0001"]


def tool(name: str) -> ModuleType:
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    module = importlib.import_module(name)
    assert Path(module.__file__).parent == TOOLS, module.__file__
    return module


def num_objects(root: Path) -> dict[str, int]:
    return {v: len(set(np.unique(read_mask_folder(root / "Annotations" / v)[0])) - {0}) for v in VIDEOS}


def test_tools_are_not_shipped() -> None:
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    find = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(REPO_ROOT), include=find.get("include", ["*"]), exclude=find.get("exclude", ()))
    assert "XRayVOSLib.evaluation" in packages and "XRayVOSLib.io" in packages
    assert all(p.split(".")[0] == "XRayVOSLib" for p in packages), packages
    assert not list((REPO_ROOT / "XRayVOSLib").rglob("card.py"))  # CMake globs XRayVOSLib/: nothing of tools/


def test_card_reports_each_object_kind(davis_root: Path, tmp_path: Path) -> None:
    card = tool("card")
    kinds = card.synthetic_kinds(davis_root)
    meta = json.loads((davis_root / "meta.json").read_text())["videos"]
    assert kinds == {v: {int(i): k for i, k in meta[v]["object_kinds"].items()} for v in VIDEOS}
    assert {v: len(ids) for v, ids in kinds.items()} == num_objects(davis_root)
    assert card.synthetic_kinds(tmp_path) is None  # not a synthetic set: no kinds table

    result = card.run_card(davis_root, None, tmp_path / "card", device="cpu", sweeps=False)
    rows = result["tables"]["kinds_one_support"]
    methods = ("local", "global", "flow", "copy")
    expected = {f"{k}: {m}" for ids in kinds.values() for k in ids.values() for m in methods}
    assert {r["setting"] for r in rows} == expected
    assert all(0.0 <= r["J&F"] <= 1.0 for r in rows)
    assert "kinds_one_support" in (tmp_path / "card" / "card.md").read_text()


def test_resolution_bound_loses_thin_wires_and_keeps_blobs(davis_root: Path, capsys) -> None:
    resolution = tool("resolution")
    wire = np.zeros((64, 64), bool)
    wire[:, 30] = True  # one pixel wide: pooled to stride 4 it is a quarter-filled column, below 0.5
    blob = np.zeros((64, 64), bool)
    blob[16:48, 16:48] = True
    assert not resolution.through_stride(wire, 4).any() and resolution.through_stride(wire, 1).sum() == 64
    assert j_measure(resolution.through_stride(blob, 4), blob) > 0.9
    bound = resolution.resolution_bound(davis_root, [1, 4, 16])
    assert bound[1]["J"] == 1.0 and bound[1]["objects"] == sum(num_objects(davis_root).values()) * 8
    assert bound[1]["J"] > bound[4]["J"] > bound[16]["J"]
    assert resolution.main(["--data", str(davis_root), "--strides", "4", "--every", "4"]) == 0
    assert "stride 4: J " in capsys.readouterr().out


def test_confusion_counts_missed_pixels_by_where_they_went(davis_root: Path, tmp_path: Path, capsys) -> None:
    card, confusion = tool("card"), tool("confusion")
    copy = make_method(RunSettings(method="copy"))
    # The copy baseline repeats frame 0's labels, so the expected counts follow from the annotations alone.
    kind = next(iter(card.synthetic_kinds(davis_root)["synth_0000"].values()))
    total = background = other = 0
    for video, ids in card.synthetic_kinds(davis_root).items():
        truth = read_mask_folder(davis_root / "Annotations" / video)
        for object_id in [i for i, k in ids.items() if k == kind]:
            for t in range(1, len(truth)):
                mine = truth[t] == object_id
                total += int(mine.sum())
                background += int((mine & (truth[0] == 0)).sum())
                other += int((mine & (truth[0] != 0) & (truth[0] != object_id)).sum())
    r = confusion.missed_pixels(davis_root, copy, kind)
    assert r["pixels"] == total > 0
    assert r["as_background"] == pytest.approx(background / total) and background > 0
    assert r["as_other_object"] == pytest.approx(other / total)
    with pytest.raises(ValueError, match="meta.json"):
        confusion.missed_pixels(tmp_path, copy, "guidewire")
    assert confusion.main(["--data", str(davis_root), "--kind", kind]) == 0  # the network, through Propagator.load
    objects = sum(k == kind for ids in card.synthetic_kinds(davis_root).values() for k in ids.values())
    printed = capsys.readouterr().out
    assert printed.startswith(f"{objects} objects, {total} ground-truth pixels") and "as background" in printed


def test_j_by_distance_bins_frames_by_their_nearest_support(davis_root: Path, tmp_path: Path) -> None:
    drift = tool("drift")
    # Supports 0 and 7 of 8 frames: frames 1 and 6 are one frame away, 2 and 5 two, 3 and 4 three.
    supports = {v: [0, 7] for v in VIDEOS}
    results = evaluate_methods(davis_root, ["copy"], supports=supports, out_dir=tmp_path, plots=False)
    per_frame = results["methods"]["copy"]["per_frame_J"]
    expected = {d: [] for d in (1, 2, 3)}
    for objects in per_frame.values():
        for frames in objects.values():
            for t, j in frames.items():
                expected[min(int(t), 7 - int(t))].append(j)
    table = drift.j_by_distance(json.loads((tmp_path / "results.json").read_text()))["copy"]
    assert set(table) == {"1", "2", "3-5"}
    for d, label in ((1, "1"), (2, "2"), (3, "3-5")):
        assert table[label] == pytest.approx(np.mean(expected[d]))
    with pytest.raises(InputError, match="results.json"):
        drift.j_by_distance({"methods": {}})

    # As documented: a script run from the repository root (confusion.py also imports its sibling card.py).
    run = subprocess.run([sys.executable, "tools/drift.py", str(tmp_path / "results.json")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "frames from support" in run.stdout and "copy" in run.stdout
    run = subprocess.run([sys.executable, "tools/confusion.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "--kind" in run.stdout, run.stderr
