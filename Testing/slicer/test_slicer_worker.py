"""The background worker (`python -m XRayVOSLib.worker`) and its process handling: cancel, crash, cleanup.

The first tests need no MRML (worker and WorkerProcess only); the rest run the logic on a real scene.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from xrayvos_slicer import export
from xrayvos_slicer.worker_process import WorkerProcess, worker_environment

# fixtures from conftest.py: mrml, logic, synthetic_cine, painted

posix_only = pytest.mark.skipif(os.name != "posix", reason="process-group handling is tested on POSIX")


def _job(tmp_path: Path, cine, method: str = "flow", frames=None) -> Path:
    supports = {0: cine.labels[0], 11: cine.labels[11]}
    return export.write_job(tmp_path, cine.frames if frames is None else frames, supports,
                            export.PropagationSettings(method=method))


def _run_to_end(worker: WorkerProcess, timeout: float = 60) -> list[dict]:
    worker.start()
    assert worker.wait(timeout) is not None, "worker did not finish"
    return worker.poll()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_worker_flow_reports_progress_and_writes_atomically(tmp_path, synthetic_cine):
    job = _job(tmp_path, synthetic_cine)
    worker = WorkerProcess(job)
    events = _run_to_end(worker)
    assert worker.returncode == 0, worker.error_text()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "progress" in kinds
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert all(d <= n for d, n in progress) and progress[-1][0] == progress[-1][1]
    assert events[-1]["torch_loaded"] is False  # flow never imports torch
    labels = export.read_output(job)
    assert labels.shape == synthetic_cine.labels.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[[0, 11]], synthetic_cine.labels[[0, 11]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.npy", "job.json", "labels.npy", "supports.npz"]


def test_worker_reports_a_corrupt_frames_file(tmp_path, synthetic_cine):
    job = _job(tmp_path, synthetic_cine)
    (tmp_path / "frames.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    worker = WorkerProcess(job)
    events = _run_to_end(worker)
    assert worker.returncode == 2
    assert events[-1]["event"] == "error" and "frames.npy" in events[-1]["message"]
    assert "cannot read frames" in worker.error_text()
    assert not (tmp_path / "labels.npy").exists()


@posix_only
def test_worker_exits_cleanly_on_sigterm(tmp_path, synthetic_cine):
    job = _job(tmp_path, synthetic_cine)
    worker = WorkerProcess(job, env=worker_environment(extra={"XRAYVOS_WORKER_TEST_DELAY": "0.3"}))
    worker.start()
    deadline = time.monotonic() + 30
    while not any(e["event"] == "progress" for e in worker.poll()):
        assert time.monotonic() < deadline and worker.running, worker.error_text()
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(10) == 3
    assert [e["event"] for e in worker.poll()][-1] == "cancelled"
    assert not list(tmp_path.glob("*labels*"))  # no output, not even a temporary one


# -- through the logic, on a real scene ----------------------------------------------------------------------


def _wait_for_progress(logic, run, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while run.done == 0:
        assert logic.poll(run) == "running", run.error
        assert time.monotonic() < deadline, "no progress from the worker"
        time.sleep(0.02)


def _launcher(tmp_path: Path) -> Path:
    """Stands in for Slicer's PythonSlicer launcher: the interpreter runs as its child."""
    script = tmp_path / "PythonSlicer"
    script.write_text('#!/bin/sh\n"$REAL_PYTHON" "$@" &\necho $! > "$CHILD_PID_FILE"\nwait $!\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@posix_only
@pytest.mark.slicer
def test_cancel_kills_the_process_tree_and_leaves_nothing(logic, synthetic_cine, painted, tmp_path):
    cine = synthetic_cine
    browser, support = painted(cine)
    before, _ = logic.label_arrays(browser, support)
    logic.python = str(_launcher(tmp_path))
    child_pid_file = tmp_path / "child.pid"
    logic.worker_env = {"REAL_PYTHON": sys.executable, "CHILD_PID_FILE": str(child_pid_file),
                        "XRAYVOS_WORKER_TEST_DELAY": "0.5"}
    nodes_before = logic.scene.GetNumberOfNodes()
    run = logic.start(browser, support, method="flow")
    _wait_for_progress(logic, run)
    launcher_pid, worker_pid = run.worker.pid, int(child_pid_file.read_text())
    assert _alive(launcher_pid) and _alive(worker_pid) and worker_pid != launcher_pid

    logic.cancel(run)
    assert run.state == "cancelled"
    assert not _alive(launcher_pid) and not _alive(worker_pid)  # the whole tree, not just the launcher
    assert not run.work_dir.exists()
    assert logic.result_sequence(browser, support) is None
    assert logic.scene.GetNumberOfNodes() == nodes_before
    after, _ = logic.label_arrays(browser, support)
    np.testing.assert_array_equal(after, before)
    assert logic.poll(run) == "cancelled"  # polling afterwards changes nothing


@pytest.mark.slicer
def test_crashing_worker_reports_stderr_and_keeps_earlier_result(logic, synthetic_cine, painted):
    cine = synthetic_cine
    browser, support = painted(cine)
    good = logic.propagate(browser, support, method="flow")
    good_labels, _ = logic.label_arrays(browser, good)
    support_labels, _ = logic.label_arrays(browser, support)

    logic.worker_env = {"XRAYVOS_WORKER_TEST_FAIL_AFTER": "2"}
    with pytest.raises(RuntimeError) as failure:
        logic.propagate(browser, support, method="copy")
    message = str(failure.value)
    assert "injected failure" in message and "Traceback" in message  # the worker's own stderr
    still, _ = logic.label_arrays(browser, logic.result_sequence(browser, support))
    np.testing.assert_array_equal(still, good_labels)
    assert good.GetAttribute("XRayVOS.Method") == "flow"
    np.testing.assert_array_equal(logic.label_arrays(browser, support)[0], support_labels)


@posix_only
@pytest.mark.slicer
def test_killed_worker_is_a_failure_with_its_exit_status(logic, synthetic_cine, painted):
    browser, support = painted(synthetic_cine)
    logic.worker_env = {"XRAYVOS_WORKER_TEST_DELAY": "0.5"}
    run = logic.start(browser, support, method="flow")
    _wait_for_progress(logic, run)
    os.kill(run.worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while logic.poll(run) == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert run.state == "failed"
    assert "exit status -9" in run.error
    assert run.result is None and logic.result_sequence(browser, support) is None
    assert not run.work_dir.exists()


def test_job_json_is_what_the_worker_reads(tmp_path, synthetic_cine):
    job = _job(tmp_path, synthetic_cine, method="local")
    data = json.loads(job.read_text())
    assert data["method"] == "local" and data["window"] == 15 and data["memory_every"] == 6 and data["model"] is None
    with np.load(tmp_path / "supports.npz") as archive:
        assert sorted(archive.files, key=int) == ["0", "11"]
    with pytest.raises(ValueError, match="odd"):
        export.PropagationSettings(window=4).validate()


def test_worker_applies_the_object_threshold_and_rejects_a_bad_one(tmp_path, synthetic_cine):
    """A lower threshold draws the network's objects larger; the supports stay exactly as painted."""
    areas = {}
    for threshold in (0.2, 0.8):
        folder = tmp_path / f"t{threshold}"
        job = export.write_job(folder, synthetic_cine.frames, {0: synthetic_cine.labels[0]},
                               export.PropagationSettings(method="local", device="cpu", threshold=threshold))
        assert json.loads(job.read_text())["threshold"] == threshold
        worker = WorkerProcess(job)
        _run_to_end(worker, timeout=120)
        assert worker.returncode == 0, worker.error_text()
        labels = export.read_output(job)
        np.testing.assert_array_equal(labels[0], synthetic_cine.labels[0])
        areas[threshold] = int((labels[1:] > 0).sum())
    assert areas[0.2] > areas[0.8] > 0, areas

    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        export.PropagationSettings(threshold=1.0).validate()
    job = _job(tmp_path / "bad", synthetic_cine)
    data = json.loads(job.read_text())
    job.write_text(json.dumps({**data, "threshold": "high"}))
    worker = WorkerProcess(job)
    events = _run_to_end(worker)
    assert worker.returncode == 2 and "threshold must be null or a number" in events[-1]["message"]


def test_worker_flip_average_runs_both_streams_and_rejects_a_non_boolean(tmp_path, synthetic_cine):
    """flip_average doubles the reported steps, keeps the supports and changes the network's result."""
    outputs, totals = {}, {}
    for flip in (False, True):
        job = export.write_job(tmp_path / f"flip{flip}", synthetic_cine.frames, {0: synthetic_cine.labels[0]},
                               export.PropagationSettings(method="local", device="cpu", flip_average=flip))
        assert json.loads(job.read_text())["flip_average"] is flip
        worker = WorkerProcess(job)
        events = _run_to_end(worker, timeout=180)
        assert worker.returncode == 0, worker.error_text()
        totals[flip] = [e["total"] for e in events if e["event"] == "progress"][-1]
        outputs[flip] = export.read_output(job)
        np.testing.assert_array_equal(outputs[flip][0], synthetic_cine.labels[0])
    assert totals[True] == 2 * totals[False]
    assert not np.array_equal(outputs[True], outputs[False])

    job = _job(tmp_path / "bad", synthetic_cine)
    job.write_text(json.dumps({**json.loads(job.read_text()), "flip_average": "yes"}))
    worker = WorkerProcess(job)
    events = _run_to_end(worker)
    assert worker.returncode == 2 and "flip_average must be true or false" in events[-1]["message"]
