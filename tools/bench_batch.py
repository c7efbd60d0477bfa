"""Cohort throughput: `xrayvos batch` with 1 and 2 (or --workers) workers against a shell loop of
`xrayvos propagate` over the same manifest, in runs/min and frames/s of wall time.

    python tools/bench_batch.py                                  # 8 runs, 30 frames of 128x128, the network
    python tools/bench_batch.py --runs 16 --frames 60 --size 256 --method flow --workers 1,2,4

The cohort is synthetic (XRayVOSLib.synth v1, seeds 0..N-1, .npy cines, the frame-0 label map as support).
Every figure is the wall time of the whole command as a user runs it: for the loop, one process per run
(Python start, imports and model load each time); for the batch, the cluster's start and stop included.
The batch's outputs are checked to be byte-identical to the loop's before any figure is printed.
--threads 1 (the default) gives every process one thread: on a busy machine, OpenMP threads that wait for a
core spin and make a 2-thread process several times slower than a 1-thread one, which would measure the
machine's load rather than the batching.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from XRayVOSLib.io import write_mask
from XRayVOSLib.synth import generate_cine


def make_cohort(root: Path, runs: int, frames: int, size: int) -> Path:
    lines = ["id,cine,supports,gt"]
    for i in range(runs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the generator's exp()
            cine = generate_cine(seed=i, num_frames=frames, size=size)
        np.save(root / f"c{i}.npy", cine.frames)
        write_mask(root / f"c{i}_m0.png", cine.labels[0])
        lines.append(f"run{i},c{i}.npy,0:c{i}_m0.png,")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def xrayvos() -> list[str]:
    return [sys.executable, "-m", "XRayVOSLib"]


def shell_loop(root: Path, runs: int, method: list[str]) -> float:
    """The loop a researcher writes today: one `xrayvos propagate` per line, run by bash; its wall seconds."""
    base = " ".join(map(shlex.quote, xrayvos()))
    lines = [f"{base} propagate c{i}.npy --support 0:c{i}_m0.png --out loop/run{i} --quiet "
             f"{' '.join(map(shlex.quote, method))}" for i in range(runs)]
    (root / "loop.sh").write_text("set -e\n" + "\n".join(lines) + "\n")
    t0 = time.perf_counter()
    subprocess.run(["bash", "loop.sh"], cwd=root, check=True)
    return time.perf_counter() - t0


def batch(root: Path, workers: int, method: list[str]) -> tuple[float, dict]:
    out = root / f"batch{workers}"
    t0 = time.perf_counter()
    subprocess.run([*xrayvos(), "batch", "manifest.csv", "--out", str(out), "--workers", str(workers), "--quiet",
                    "--no-dashboard", *method], cwd=root, check=True)
    return time.perf_counter() - t0, json.loads((out / "summary.json").read_text())


def same_outputs(root: Path, workers: int, runs: int) -> bool:
    for i in range(runs):
        loop, ours = root / "loop" / f"run{i}", root / f"batch{workers}" / f"run{i}"
        pngs = sorted(p.name for p in loop.glob("*.png"))
        if pngs != sorted(p.name for p in ours.glob("*.png")):
            return False
        if any((loop / name).read_bytes() != (ours / name).read_bytes() for name in pngs):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--method", default="local", help="propagate's --method (default local: the network)")
    parser.add_argument("--workers", default="1,2", help="batch sizes to measure, comma-separated")
    parser.add_argument("--work", help="folder for the cohort and the outputs (default: a temporary one)")
    parser.add_argument("--threads", default="1",
                        help="OMP_NUM_THREADS and OPENCV_FOR_THREADS_NUM of every process (default 1; 'auto': "
                             "unset, each process takes every core, the batch shares them out)")
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        if args.threads == "auto":
            os.environ.pop(name, None)
        else:
            os.environ[name] = args.threads
    method = ["--method", args.method]
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(args.work or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        make_cohort(root, args.runs, args.frames, args.size)
        frames = args.runs * args.frames
        print(f"cohort: {args.runs} runs x {args.frames} frames of {args.size}x{args.size}, method {args.method}, "
              f"threads {args.threads}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        rows = [("shell loop of propagate", shell_loop(root, args.runs, method), None)]
        for workers in (int(w) for w in args.workers.split(",")):
            seconds, summary = batch(root, workers, method)
            if summary["counts"]["done"] != args.runs or not same_outputs(root, workers, args.runs):
                raise SystemExit(f"batch with {workers} workers: outputs differ from the loop's or runs failed")
            rows.append((f"batch, {workers} worker{'s' if workers > 1 else ''}", seconds, summary["seconds"]))
        print(f"{'':26} {'wall s':>8} {'runs/min':>9} {'frames/s':>9}   (inside run_batch: s)")
        for name, seconds, inside in rows:
            extra = f"   ({inside:.1f})" if inside is not None else ""
            print(f"{name:26} {seconds:8.1f} {60 * args.runs / seconds:9.1f} {frames / seconds:9.1f}{extra}")


if __name__ == "__main__":
    main()
