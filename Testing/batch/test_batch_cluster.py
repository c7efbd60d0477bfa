"""run_batch on clusters it does not own: a LocalCluster whose worker process is killed mid-run (replaced,
the run retried, or recorded once it has killed too many), and `dask scheduler` + `dask worker` started as
separate processes, reached through `xrayvos batch --scheduler`, running the network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from batch_cohort import batch_command, child_env, make_cohort, stop_group, summary, without_timing, write_csv

from XRayVOSLib.batch import BatchResult, run_batch
from XRayVOSLib.batch import task as batch_task
from XRayVOSLib.cli import main
from XRayVOSLib.inference.propagator import default_model_path
from XRayVOSLib.settings import RunSettings


def _kill_a_busy_worker(client, prefix: str = "xrayvos-run-", timeout: float = 60) -> set[str]:
    """SIGKILL the worker process that is processing (computing, or holding to compute next) runs of ours;
    returns their ids."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            ours = {str(k)[len(prefix):].rsplit("-", 1)[0] for k in keys if str(k).startswith(prefix)}
            if ours and worker in pids:
                os.kill(pids[worker], signal.SIGKILL)
                return ours
        time.sleep(0.02)
    raise AssertionError("no worker took a run")


def _in_thread(**kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=run_batch(**kwargs)), daemon=True)
    thread.start()
    return thread, box


def test_a_killed_worker_is_replaced_and_its_run_retried_then_recorded_once_it_killed_too_many(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    manifest = write_csv(tmp_path / "m.csv", make_cohort(tmp_path, 3, frames=60, size=128, gt=False))
    settings = RunSettings(method="flow")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        common = dict(manifest=manifest, settings=settings, client=client, progress=False, log=lambda _: None)
        thread, box = _in_thread(out=tmp_path / "out", **common)
        victims = _kill_a_busy_worker(client)
        thread.join(120)
        result: BatchResult = box["result"]
        assert result.counts["done"] == 3 and result.exit_code == 0, result.rows  # the victims' runs were redone
        assert all((tmp_path / "out" / v / "run.json").is_file() for v in victims)
        client.wait_for_workers(2, timeout=60)  # the nanny started a new worker process

        cluster.scheduler.allowed_failures = 0  # the next death of a run's worker is that run's last
        thread, box = _in_thread(out=tmp_path / "out2", **common)
        victims = _kill_a_busy_worker(client)
        thread.join(120)
        rows = {r["id"]: r for r in box["result"].rows}
        assert 1 <= len(victims) < 3 and box["result"].exit_code == 3
        for victim in victims:
            assert rows[victim]["status"] == "failed" and "worker running it died" in rows[victim]["error"], rows
            assert summary(tmp_path / "out2")[victim]["status"] == "failed"
            assert not (tmp_path / "out2" / victim).exists()
        assert all(r["status"] == "done" for i, r in rows.items() if i not in victims)


@pytest.fixture
def external_cluster(tmp_path: Path):
    """`dask scheduler` and one `dask worker` (one process, one thread) on localhost, as a user starts them."""
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file = tmp_path / "scheduler.json"
    started = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
                                 "--port", "0", "--no-dashboard"], env=child_env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        address = json.loads(scheduler_file.read_text())["address"]
        started.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                         "--no-dashboard", "--name", "outside"], env=child_env(),
                                        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address
    finally:
        for proc in reversed(started):
            stop_group(proc)


@pytest.mark.skipif(default_model_path() is None, reason="models/ ships no checkpoint here")
def test_batch_through_a_separately_started_scheduler_runs_the_network_loading_the_model_once(
        tmp_path: Path, external_cluster: str, torch_one_thread) -> None:
    from distributed import Client

    manifest = write_csv(tmp_path / "m.csv", make_cohort(tmp_path, 2, frames=5, size=64, gt=False))
    for out in (tmp_path / "out", tmp_path / "again"):  # two batches on the same worker
        done = subprocess.run(batch_command(manifest, out, "--scheduler", external_cluster), env=child_env(),
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert f"Dask cluster {external_cluster}" in done.stderr and "2 done, 0 failed of 2 runs" in done.stderr
    with Client(external_cluster, timeout="30s") as client:
        assert list(client.run(batch_task.loads).values()) == [1]  # one worker, one model load for 4 runs
    rows = summary(tmp_path / "out")
    assert [r["status"] for r in rows.values()] == ["done", "done"]
    for i in range(2):  # the network's result on the outside worker is propagate's, byte for byte
        ours, theirs = tmp_path / "out" / f"run{i}", tmp_path / "propagate" / f"run{i}"
        assert main(["propagate", str(tmp_path / f"c{i}.npy"), "--support", f"0:{tmp_path / f'c{i}_m0.png'}",
                     "--out", str(theirs), "--quiet"]) == 0
        record = json.loads((ours / "run.json").read_text())
        assert record["settings"]["method"] == "local" and record["model"] == str(default_model_path())
        assert record["model_trained"] is True and len(record["fingerprint"]["model_sha256"]) == 64
        assert without_timing(record) == without_timing(json.loads((theirs / "run.json").read_text()))
        for png in theirs.glob("*.png"):
            assert (ours / png.name).read_bytes() == png.read_bytes(), png
