"""`python -m XRayVOSLib.worker` in a real process (issue 20, points 2, 7 and 8): mistyped job values and
unknown keys are refused as a whole in one line (exit 2, a lone "error" event, nothing run); the output
location and the supports are checked before the run, and a full disk leaves no partial labels.npy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from XRayVOSLib.events import EXIT_INPUT, EXIT_OK
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import generate_cine

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def cine():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return generate_cine(seed=1, num_frames=6, size=64)


def write_job(folder: Path, cine, settings: dict | None = None, supports: dict | None = None, **keys) -> Path:
    """A version-2 job (frames.npy, supports.npz, job.json) in `folder`; keys override the job's own."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "frames.npy", cine.frames)
    supports = {"0": cine.labels[0]} if supports is None else supports
    np.savez(folder / "supports.npz", **supports)
    job = {"version": 2, "frames": "frames.npy", "supports": "supports.npz", "output": "labels.npy", "model": None,
           "settings": RunSettings(method="flow").to_dict() if settings is None else settings, **keys}
    (folder / "job.json").write_text(json.dumps(job))
    return folder / "job.json"


def run_worker(job: Path, preexec=None) -> tuple[subprocess.CompletedProcess, list[dict]]:
    proc = subprocess.run([sys.executable, "-m", "XRayVOSLib.worker", "--job", str(job)], capture_output=True,
                          text=True, env=ENV, timeout=120, preexec_fn=preexec)
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


def refused(job: Path, *wanted: str, started: bool = False, preexec=None) -> str:
    """Exit 2, one stderr line (no traceback) holding every `wanted`, the same message as the last event,
    and no labels.npy (nor any temporary file) beside the job."""
    proc, events = run_worker(job, preexec)
    assert proc.returncode == EXIT_INPUT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert events[-1]["event"] == "error" and events[-1]["message"] in lines[0]
    assert [e["event"] for e in events][:1] == (["started"] if started else ["error"])
    for text in wanted:
        assert text in lines[0], lines[0]
    assert sorted(p.name for p in job.parent.iterdir()) == ["frames.npy", "job.json", "supports.npz"]
    return lines[0]


def test_a_good_job_runs(tmp_path: Path, cine) -> None:
    job = write_job(tmp_path, cine)
    proc, events = run_worker(job)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert events[-1]["event"] == "done"
    labels = np.load(tmp_path / "labels.npy")
    assert labels.shape == cine.frames.shape and np.array_equal(labels[0], cine.labels[0])


@pytest.mark.parametrize("value, shown", [("abc", "'abc'"), ([15], "[15]"), (2.7, "2.7"), (None, "None")])
def test_a_mistyped_window_is_refused_not_truncated(tmp_path: Path, cine, value, shown: str) -> None:
    """2.7 was once truncated to an even 2; "abc" and [15] gave a traceback (exit 1)."""
    job = write_job(tmp_path, cine, settings={"method": "flow", "window": value})
    refused(job, str(job), "setting window must be an integer >= 1", f"got {shown}")


@pytest.mark.parametrize("where, key", [("settings", "windw"), ("job", "windw")])
def test_unknown_keys_are_refused_not_ignored(tmp_path: Path, cine, where: str, key: str) -> None:
    if where == "settings":
        job = write_job(tmp_path, cine, settings={"method": "flow", key: 7})
        refused(job, str(job), f"unknown setting(s) {key}")
    else:
        job = write_job(tmp_path, cine, **{key: 7})
        refused(job, str(job), f"unknown job key(s) {key}")


@pytest.mark.parametrize("output, problem", [("plain/labels.npy", "is a file, not a folder"),
                                             ("outdir", "is a folder; give a file name")])
def test_an_unusable_output_is_refused_before_the_run(tmp_path: Path, cine, output: str, problem: str) -> None:
    job = write_job(tmp_path / "job", cine, output=output)
    (job.parent / "plain").write_text("x")
    (job.parent / "outdir").mkdir()
    proc, events = run_worker(job)
    assert proc.returncode == EXIT_INPUT and [e["event"] for e in events] == ["error"], proc.stderr
    assert problem in events[0]["message"] and "output" in events[0]["message"]
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("supports, problem", [
    ({"0": np.full((64, 64), 300, np.uint16)}, "object id 300 is above 255"),
    ({"0.5": np.ones((64, 64), np.uint8)}, "support key '0.5' is not a frame index"),
    ({"0": np.ones((8, 8), np.uint8)}, "mask is 8x8"),
])
def test_bad_supports_are_refused_before_the_run(tmp_path: Path, cine, supports: dict, problem: str) -> None:
    job = write_job(tmp_path, cine, supports=supports)
    refused(job, "supports.npz", problem)


@pytest.mark.skipif(os.name != "posix", reason="a file-size limit is POSIX")
def test_a_full_disk_gives_an_error_event_and_no_partial_output(tmp_path: Path, cine) -> None:
    """labels.npy is 6 x 64 x 64 + 128 bytes; under a 20 kB file-size limit it cannot be written."""

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    job = write_job(tmp_path, cine)
    refused(job, "labels.npy: cannot write", "the disk is full or a file-size limit is reached", started=True,
            preexec=limit)
