"""Synthetic cohorts for the batch tests (Testing/batch/ is on sys.path when pytest imports them): real
synthetic angiography cines (XRayVOSLib.synth) as .npy, their frame-0 masks as PNG, ground truth folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from XRayVOSLib.io import write_mask, write_mask_sequence
from XRayVOSLib.synth import generate_cine

TIMING_KEYS = ("seconds", "total_seconds", "fps", "peak_memory_mb")  # what differs between two equal runs


def make_cohort(root: Path, count: int, frames: int, size: int, gt: bool = True) -> list[dict]:
    """`count` cines root/c<i>.npy with masks root/c<i>_m0.png (and root/gt<i>/%05d.png); the manifest rows."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the generator's exp()
            cine = generate_cine(seed=i, num_frames=frames, size=size)
        np.save(root / f"c{i}.npy", cine.frames)
        write_mask(root / f"c{i}_m0.png", cine.labels[0])
        row = {"id": f"run{i}", "cine": f"c{i}.npy", "supports": f"0:c{i}_m0.png", "gt": ""}
        if gt:
            write_mask_sequence(root / f"gt{i}", cine.labels)
            row["gt"] = f"gt{i}"
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    lines = ["id,cine,supports,gt"] + [f"{r['id']},{r['cine']},{r['supports']},{r.get('gt', '')}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def batch_command(manifest: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "XRayVOSLib", "batch", str(manifest), "--out", str(out), "--no-dashboard",
            "--quiet", *args]


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def summary(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads((out / "summary.json").read_text())["runs"]}


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every complete run's run.json: a recomputed run gets a new file (staging + swap)."""
    return {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*/run.json")}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".xrayvos-" in p.name)


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 20.0) -> None:
    """Signal the process group this test started (start_new_session=True) and wait until it is gone."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
