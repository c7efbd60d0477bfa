"""tools/bench_batch.py runs end to end on a tiny cohort: the shell loop, a batch, the byte-identity check and
the table (its figures are measured by running it, not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batch_cohort import child_env

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench_batch.py"


def test_bench_batch_prints_the_loop_and_batch_throughput(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--runs", "2", "--frames", "4", "--size", "64", "--method",
                           "copy", "--workers", "1", "--work", str(tmp_path)], capture_output=True, text=True,
                          timeout=180, env=child_env())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cohort: 2 runs x 4 frames of 64x64, method copy, threads 1")
    loop, batch = (next(line for line in lines if line.startswith(name)) for name in ("shell loop", "batch, 1 worker"))
    for line in (loop, batch):
        wall, runs_per_min, frames_per_s = (float(v) for v in line[26:].split()[:3])  # after the name column
        assert wall > 0
        # wall is printed to 0.1 s, so the rates agree with it within what that rounding allows
        rel = 0.06 / wall + 0.01
        assert runs_per_min == pytest.approx(60 * 2 / wall, rel=rel)
        assert frames_per_s == pytest.approx(8 / wall, rel=rel)
    assert (tmp_path / "loop.sh").read_text().count(" propagate ") == 2
    assert sorted(p.name for p in (tmp_path / "batch1").iterdir()) == ["run0", "run1", "summary.csv", "summary.json"]
