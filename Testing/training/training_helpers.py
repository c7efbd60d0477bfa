"""Helpers of the training tests (Testing/training/ is on sys.path when pytest imports its test modules)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from XRayVOSLib.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def tiny_config(data: Path, out_dir: Path, **overrides) -> TrainConfig:
    """A few steps at 64 x 64 on CPU: seconds per run."""
    values = dict(data=str(data), size=64, batch_size=2, steps=3, out_dir=str(out_dir), num_workers=0,
                  save_every=2, log_every=1, device="cpu", loader_refresh=4)
    values.update(overrides)
    return TrainConfig(**values)


class _Payload:
    """Unpickling this runs code: it writes `marker` (what an attacker's state.pt would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('unpickled')",)


def plant_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model": _Payload(marker), "step": 0}))
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m XRayVOSLib ARGS` in a fresh interpreter: the real command, its real exit code and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "XRayVOSLib", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(stderr: str) -> str:
    """The one error line of a failed command; fails the test on a traceback or on several lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]
