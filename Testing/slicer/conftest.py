"""Fixtures for the Slicer-module tests: a real MRML scene from the slicer-core wheel (no Qt, no slicer.app).

These fixtures apply to every test module in this folder. Every fixture that needs MRML skips
with a clear reason when slicer-core is not installed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "XRayVOS"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # as Slicer does for a scripted module's folder


def _slicer_core():
    try:
        import slicer
    except ImportError as exc:
        return None, f"slicer-core is not installed ({exc}); pip install slicer-core"
    if not hasattr(slicer, "vtkMRMLScene"):  # an unrelated PyPI package is also called "slicer"
        return None, "the importable 'slicer' is not slicer-core (no vtkMRMLScene); pip install slicer-core"
    return slicer, ""


SLICER, SKIP_REASON = _slicer_core()


@dataclass
class MRML:
    """A scene wired like Slicer's: application logic, Sequences/Segmentations/Volumes logics, MRB I/O."""

    scene: Any
    app: Any
    logics: dict = field(default_factory=dict)
    keep: list = field(default_factory=list)  # VTK objects that must outlive the scene


def make_mrml(cache_dir: Path) -> MRML:
    import vtk

    slicer = SLICER
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    mrml = MRML(scene, app)
    for name, cls in (("Sequences", slicer.vtkSlicerSequencesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Volumes", slicer.vtkSlicerVolumesLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        mrml.logics[name] = logic
    # ReadFromMRB needs a cache manager and data I/O manager, as Slicer's application sets up.
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    remote_io.SetMRMLApplicationLogic(app)
    remote_io.GetCacheManager().SetRemoteCacheDirectory(str(cache_dir))
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLScene(scene)
    data_io.SetMRMLApplicationLogic(app)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.AddDataIOToScene()
    mrml.keep += [remote_io, data_io]
    return mrml


@pytest.fixture
def mrml_factory(tmp_path: Path) -> Iterator[Callable[[], MRML]]:
    """Makes independent scenes (e.g. one to save an .mrb, one to load it); clears them afterwards."""
    if SLICER is None:
        if os.environ.get("CI", "").lower() == "true":  # as for ../shared: a green CI run must have run these
            pytest.fail(f"{SKIP_REASON} (CI=true)")
        pytest.skip(SKIP_REASON)
    made: list[MRML] = []

    def factory() -> MRML:
        cache = tmp_path / f"mrml-cache-{len(made)}"
        cache.mkdir()
        made.append(make_mrml(cache))
        return made[-1]

    yield factory
    for scene in made:
        scene.scene.Clear(True)


@pytest.fixture
def mrml(mrml_factory) -> MRML:
    return mrml_factory()


@pytest.fixture
def logic(mrml: MRML):
    from xrayvos_slicer.logic import XRayVOSLogic

    return XRayVOSLogic(mrml.scene)


@pytest.fixture(scope="session")
def synthetic_cine():
    """12 frames of 128x128 with at least two objects (seed chosen for that)."""
    from XRayVOSLib.synth import generate_cine

    cine = generate_cine(seed=3, num_frames=12, size=128)
    assert len(cine.object_names) >= 2
    return cine


@pytest.fixture
def add_cine(logic):
    """add_cine(cine, name) -> browser of a synthetic cine (frame times and spacing of the generator)."""

    def add(cine, name: str = "synthetic"):
        times = np.arange(cine.frames.shape[0]) * cine.frame_time
        return logic.add_cine(cine.frames, times, cine.spacing, name)

    return add


@pytest.fixture
def painted(logic, add_cine):
    """painted(cine, frames) -> (browser, support segmentation) with the ground truth painted at `frames`."""

    def paint(cine, frames=(0, 11)):
        browser = add_cine(cine)
        support = None
        for t in frames:
            support = logic.set_support(browser, t, cine.labels[t], support=support, names=dict(cine.object_names))
        return browser, support

    return paint
