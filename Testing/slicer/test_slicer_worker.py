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

from XRayVOSLib.events import EXIT_CANCELLED, EXIT_INPUT
from XRayVOSLib.settings import RunSettings
from xrayvos_slicer import export
from xrayvos_slicer.worker_process import WorkerProcess, worker_environment

# fixtures from conftest.py: mrml, logic, synthetic_cine, painted

posix_only = pytest.mark.skipif(os.name != "posix", reason="process-group handling is tested on POSIX")


def _job(tmp_path: Path, cine, method: str = "flow", frames=None) -> Path:
    supports = {0: cine.labels[0], 11: cine.labels[11]}
    return export.write_job(tmp_path, cine.frames if frames is None else frames, supports, RunSettings(method=method))


def _edit_job(job: Path, **changes) -> None:
    """Rewrite keys of a written job file (None deletes a key)."""
    data = {**json.loads(job.read_text()), **changes}
    job.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))


def _run_to_end(worker: WorkerProcess, timeout: float = 60) -> list[dict]:
    worker.start()
    assert worker.wait(timeout) is not None, "worker did not finish"
    return worker.poll()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_job_refuses_segment_values_above_255_instead_of_wrapping(tmp_path, synthetic_cine):
    """Results are uint8 label maps: a painted value 300 would wrap to 44 and silently become another object."""
    labels = synthetic_cine.labels[0].astype(np.uint16)
    labels[labels == labels.max()] = 300
    with pytest.raises(ValueError, match="label value 300 is above 255"):
        export.write_job(tmp_path / "job", synthetic_cine.frames, {0: labels}, RunSettings(method="flow"))
    assert not (tmp_path / "job").exists()


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
    assert worker.returncode == EXIT_INPUT
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
    assert worker.wait(10) == EXIT_CANCELLED == 130
    last = worker.poll()[-1]
    assert last["event"] == "cancelled" and 1 <= last["done"] <= last["total"]  # how far it got
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
    run = logic.start(browser, support, RunSettings(method="flow"))
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
    good = logic.propagate(browser, support, RunSettings(method="flow"))
    good_labels, _ = logic.label_arrays(browser, good)
    support_labels, _ = logic.label_arrays(browser, support)

    logic.worker_env = {"XRAYVOS_WORKER_TEST_FAIL_AFTER": "2"}
    with pytest.raises(RuntimeError) as failure:
        logic.propagate(browser, support, RunSettings(method="copy"))
    message = str(failure.value)
    assert "injected failure" in message and 'worker.py", line' in message  # the worker's own traceback
    still, _ = logic.label_arrays(browser, logic.result_sequence(browser, support))
    np.testing.assert_array_equal(still, good_labels)
    assert good.GetAttribute("XRayVOS.Method") == "flow"
    np.testing.assert_array_equal(logic.label_arrays(browser, support)[0], support_labels)


def _signalled_run(logic, browser, support, signum: int, delay: str):
    """A slow flow run, sent `signum` from outside once it reports progress, polled until it ends."""
    logic.worker_env = {"XRAYVOS_WORKER_TEST_DELAY": delay}
    run = logic.start(browser, support, RunSettings(method="flow"))
    _wait_for_progress(logic, run)
    os.kill(run.worker.pid, signum)
    deadline = time.monotonic() + 30
    while logic.poll(run) == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return run


@posix_only
@pytest.mark.slicer
def test_killed_worker_is_a_failure_with_its_exit_status(logic, synthetic_cine, painted):
    browser, support = painted(synthetic_cine)
    run = _signalled_run(logic, browser, support, signal.SIGKILL, "0.5")
    assert run.state == "failed"
    assert "exit status -9" in run.error
    assert run.result is None and logic.result_sequence(browser, support) is None
    assert not run.work_dir.exists()


@posix_only
@pytest.mark.slicer
def test_a_signal_from_outside_is_a_cancel_not_a_failure(logic, synthetic_cine, painted):
    """SIGTERM sent by someone else (not logic.cancel): exit 130 is read as cancelled, nothing is written."""
    browser, support = painted(synthetic_cine)
    run = _signalled_run(logic, browser, support, signal.SIGTERM, "0.3")
    assert run.state == "cancelled" and run.worker.returncode == EXIT_CANCELLED, run.error
    assert logic.result_sequence(browser, support) is None and not run.work_dir.exists()


# -- the job format (version 2: model + RunSettings) ---------------------------------------------------------


def test_job_json_is_what_the_worker_reads(tmp_path, synthetic_cine):
    settings = RunSettings.from_model(None, method="local", window=7, decision="threshold", threshold=0.3)
    supports = {0: synthetic_cine.labels[0], 11: synthetic_cine.labels[11]}
    job = export.write_job(tmp_path, synthetic_cine.frames, supports, settings)
    data = json.loads(job.read_text())
    assert set(data) == {"version", "frames", "supports", "output", "model", "settings"}
    assert data["version"] == 2 and data["model"] is None
    assert RunSettings.from_dict(data["settings"], source=str(job)) == settings  # the round trip is exact
    assert RunSettings.from_dict(settings.to_dict()).to_dict() == settings.to_dict()
    with np.load(tmp_path / "supports.npz") as archive:
        assert sorted(archive.files, key=int) == ["0", "11"]


def test_a_partial_job_overlays_the_models_settings(tmp_path, synthetic_cine):
    """settings {"method": "copy", "decision": "threshold"}: every other value is the model's own (its
    carried threshold, fusion weights) over the defaults, as the worker reports it in its started line."""
    job = _job(tmp_path, synthetic_cine, method="copy")
    _edit_job(job, settings={"method": "copy", "decision": "threshold"})
    worker = WorkerProcess(job)
    events = _run_to_end(worker)
    assert worker.returncode == 0, worker.error_text()
    started = next(e for e in events if e["event"] == "started")
    expected = RunSettings.from_model(None).replace(method="copy", decision="threshold")
    assert started["settings"] == expected.to_dict() and started["method"] == "copy"
    np.testing.assert_array_equal(export.read_output(job)[[0, 11]], synthetic_cine.labels[[0, 11]])


def _refused(job: Path) -> tuple[WorkerProcess, list[dict]]:
    worker = WorkerProcess(job)
    events = _run_to_end(worker)
    assert worker.returncode == EXIT_INPUT, worker.error_text()
    assert events[-1]["event"] == "error" and not (job.parent / "labels.npy").exists()
    return worker, events


@pytest.mark.parametrize("key, value, wanted", [("window", 4, "positive odd number"),
                                                ("decision", "maybe", "one of area-prior, threshold"),
                                                ("threshold", "high", "strictly between 0 and 1"),
                                                ("temporal_blend", 1.0, "in [0, 1)"),
                                                ("speed", "fast", "unknown setting(s) speed")])
def test_worker_refuses_a_bad_setting_in_one_line_naming_job_and_setting(tmp_path, synthetic_cine, key, value,
                                                                         wanted):
    job = _job(tmp_path, synthetic_cine, method="flow")
    _edit_job(job, settings={**RunSettings(method="flow").to_dict(), key: value})
    worker, events = _refused(job)
    stderr = list(worker.stderr_tail)
    assert len(stderr) == 1, stderr  # one line, no traceback
    assert str(job) in stderr[0] and key in stderr[0] and wanted in stderr[0], stderr[0]
    assert events[-1]["message"] in stderr[0]
    assert [e["event"] for e in events] == ["error"]  # refused before anything started


def test_worker_refuses_another_job_version_and_old_top_level_keys(tmp_path, synthetic_cine):
    job = _job(tmp_path, synthetic_cine, method="flow")
    _edit_job(job, version=1)
    worker, events = _refused(job)
    assert "job format version 1 is not supported" in events[-1]["message"] and str(job) in worker.error_text()
    _edit_job(job, version=2, method="flow")  # a version-1 key beside the settings
    _, events = _refused(job)
    assert "unknown job key(s) method" in events[-1]["message"]
    _edit_job(job, method=None, model="missing.safetensors")
    _, events = _refused(job)
    assert "missing.safetensors" in events[-1]["message"] and "does not exist" in events[-1]["message"]


def test_worker_applies_the_decision_and_threshold_of_the_settings(tmp_path, synthetic_cine):
    """Decision "threshold": a lower threshold draws the network's objects larger; the supports stay exactly
    as painted. The area prior gives a third, different result from the same probabilities."""
    outputs = {}
    for name, changes in (("t0.2", {"decision": "threshold", "threshold": 0.2}),
                          ("t0.8", {"decision": "threshold", "threshold": 0.8}),
                          ("area", {"decision": "area-prior"})):
        settings = RunSettings.from_model(None, method="local", device="cpu", **changes)
        job = export.write_job(tmp_path / name, synthetic_cine.frames, {0: synthetic_cine.labels[0]}, settings)
        assert json.loads(job.read_text())["settings"]["decision"] == settings.decision
        worker = WorkerProcess(job)
        _run_to_end(worker, timeout=180)
        assert worker.returncode == 0, worker.error_text()
        outputs[name] = export.read_output(job)
        assert outputs[name][0].tobytes() == synthetic_cine.labels[0].astype(np.uint8).tobytes()  # bit-identical
    areas = {name: int((labels[1:] > 0).sum()) for name, labels in outputs.items()}
    assert areas["t0.2"] > areas["t0.8"] > 0, areas
    assert not np.array_equal(outputs["area"], outputs["t0.2"]) and not np.array_equal(outputs["area"], outputs["t0.8"])


@posix_only
def test_the_worker_interpreter_is_pythonslicer_from_path_or_slicer_home(tmp_path, monkeypatch):
    """runtime.python_executable: PythonSlicer on PATH, else <Slicer home>/bin/PythonSlicer, else this Python."""
    from XRayVOSLib.runtime import python_executable

    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert python_executable(tmp_path / "nowhere") == sys.executable
    (tmp_path / "home" / "bin").mkdir(parents=True)
    beside = tmp_path / "home" / "bin" / name
    beside.write_text("")
    assert python_executable(tmp_path / "home") == str(beside)
    on_path = _launcher(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert python_executable(tmp_path / "home") == str(on_path)
    assert WorkerProcess(tmp_path / "job.json").python == str(on_path)  # the logic's default interpreter
