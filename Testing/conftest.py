"""Shared fixtures. `shared_dir` follows ../shared/README.md: skip where absent, fail under CI=true."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The Slicer module's folder, as Slicer puts it on sys.path: test modules import xrayvos_slicer at the top.
if str(REPO_ROOT / "XRayVOS") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "XRayVOS"))


def _shared_dir() -> Path:
    return Path(os.environ.get("XRAYVOS_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not (path / "data").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared data folder {path} is missing under CI=true")
        pytest.skip(f"shared data folder {path} is absent (set XRAYVOS_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def phantom_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "xa-phantom"


@pytest.fixture(scope="session")
def pretrained_mobilenet(shared_dir: Path) -> Path:
    return shared_dir / "pretrained" / "mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="session")
def davis_root(tmp_path_factory) -> Path:
    """A small synthetic DAVIS-layout set: videos synth_0000 and synth_0001, 8 frames of 96x96 (read-only)."""
    from XRayVOSLib.synth import write_davis_dataset

    root = tmp_path_factory.mktemp("davis")
    assert write_davis_dataset(root, num_videos=2, num_frames=8, size=96, seed=0) == ["synth_0000", "synth_0001"]
    return root


@pytest.fixture(scope="module")
def torch_one_thread():
    """Test frames are tiny: one thread avoids OpenMP spin-waits on a shared 2-core machine (~4x faster)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
