"""`xrayvos batch` on its embedded LocalCluster of real worker processes: results identical to `propagate`'s,
bad inputs recorded without stopping the others, resume after a fix and after the batch is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from batch_cohort import batch_command, child_env, leftovers, make_cohort, stamps, stop_group, summary, \
    without_timing, write_csv

from XRayVOSLib.batch import EXIT_SOME_FAILED
from XRayVOSLib.cli import main
from XRayVOSLib.evaluation.runner import read_annotations
from XRayVOSLib.io import read_mask, read_mask_folder, write_mask
from XRayVOSLib.metrics import score_video, summarize


@pytest.fixture
def cohort(tmp_path: Path) -> dict:
    """6 synthetic cines (64 px, 6 frames; ground truth for runs 0 and 1); run4's cine is a truncated .npy,
    run5's mask is 48x64 for 64x64 frames."""
    rows = make_cohort(tmp_path, 6, frames=6, size=64)
    for row in rows[2:]:
        row["gt"] = ""
    good = (tmp_path / "c4.npy").read_bytes()
    (tmp_path / "c4.npy").write_bytes(good[:300])
    mask = read_mask(tmp_path / "c5_m0.png")
    write_mask(tmp_path / "c5_small.png", mask[:48])
    rows[5]["supports"] = "0:c5_small.png"
    return {"root": tmp_path, "rows": rows, "manifest": write_csv(tmp_path / "cohort.csv", rows), "good4": good,
            "mask5": mask}


def run_cli(manifest: Path, out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(manifest, out, *args), capture_output=True, text=True, timeout=timeout,
                          env=child_env())


def test_six_cines_on_two_workers_four_as_propagate_two_failures_recorded_then_resumed(cohort: dict) -> None:
    root, out = cohort["root"], cohort["root"] / "out"
    done = run_cli(cohort["manifest"], out, "--workers", "2", "--method", "flow")
    assert done.returncode == EXIT_SOME_FAILED == 3, done.stderr
    assert "4 done, 2 failed of 6 runs" in done.stderr and "Traceback" not in done.stderr
    rows = summary(out)
    assert [rows[f"run{i}"]["status"] for i in range(6)] == ["done"] * 4 + ["failed"] * 2
    assert "c4.npy" in rows["run4"]["error"] and "not a readable .npy" in rows["run4"]["error"]
    assert "c5_small.png" in rows["run5"]["error"] and "64x48 but frames are 64x64" in rows["run5"]["error"]
    assert f"run4 failed: {rows['run4']['error']}" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"run{i}" for i in range(4)] + ["summary.csv", "summary.json"]
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0] == "id,status,frames,objects,seconds,fps,J,F,J&F,error" and len(csv_lines) == 7

    for i in range(4):  # the same run by `propagate`, in this process: the same files, byte for byte
        ours, theirs = out / f"run{i}", root / "propagate" / f"run{i}"
        assert main(["propagate", str(root / f"c{i}.npy"), "--support", f"0:{root / f'c{i}_m0.png'}", "--out",
                     str(theirs), "--method", "flow", "--quiet"]) == 0
        assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
        for png in theirs.glob("*.png"):
            assert (ours / png.name).read_bytes() == png.read_bytes(), png
        record = json.loads((ours / "run.json").read_text())
        assert without_timing(record) == without_timing(json.loads((theirs / "run.json").read_text()))
        assert rows[f"run{i}"]["frames"] == 6 and rows[f"run{i}"]["objects"] == len(record["objects"])
        assert rows[f"run{i}"]["fps"] == record["fps"] and rows[f"run{i}"]["seconds"] == record["seconds"]
    for i in range(2):  # scored as `evaluate` scores a video (support frame 0 left out)
        pred = {t: np.asarray(m) for t, m in read_mask_folder(out / f"run{i}").items()}
        wanted = summarize(score_video(f"run{i}", pred, read_annotations(root / f"gt{i}"), [0]))["dataset"]
        assert [rows[f"run{i}"][k] for k in ("J", "F", "J&F")] == pytest.approx([wanted[k] for k in ("J", "F", "J&F")],
                                                                               abs=1e-6)
    assert rows["run2"]["J"] is None  # no ground truth given

    before = stamps(out)
    (root / "c4.npy").write_bytes(cohort["good4"])  # both bad inputs fixed: the re-run redoes only those two
    write_mask(root / "c5_small.png", cohort["mask5"])
    again = run_cli(cohort["manifest"], out, "--workers", "2", "--method", "flow")
    assert again.returncode == 0, again.stderr
    assert "2 done, 4 skipped, 0 failed of 6 runs" in again.stderr
    rows2 = summary(out)
    assert [rows2[f"run{i}"]["status"] for i in range(6)] == ["skipped"] * 4 + ["done"] * 2
    assert rows2["run0"]["J&F"] == rows["run0"]["J&F"]  # a skipped run with ground truth is scored again
    after = stamps(out)
    assert {k: after[k] for k in before} == before and sorted(after) == [f"run{i}" for i in range(6)]
    assert leftovers(out) == []


def test_killed_mid_run_the_rerun_completes_only_the_missing_runs(tmp_path: Path) -> None:
    """SIGKILL to the whole batch (driver and its worker processes) once a run is complete; the re-run skips
    the complete runs (their run.json untouched) and computes the rest, tidying the killed run's staging."""
    manifest = write_csv(tmp_path / "cohort.csv", make_cohort(tmp_path, 6, frames=40, size=128, gt=False))
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_command(manifest, out, "--workers", "1", "--method", "flow"), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob("*/run.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the batch ended before it was killed: {proc.stderr.read().decode()}"
    finally:
        stop_group(proc, signal.SIGKILL)
    complete = stamps(out)
    assert 1 <= len(complete) < 6, complete
    assert not (out / "summary.json").exists()  # killed: no summary written, nothing claims to be done

    again = subprocess.run(batch_command(manifest, out, "--workers", "2", "--method", "flow"), env=child_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rows = summary(out)
    assert {i for i, r in rows.items() if r["status"] == "skipped"} == set(complete)
    assert {i for i, r in rows.items() if r["status"] == "done"} == {f"run{i}" for i in range(6)} - set(complete)
    after = stamps(out)
    assert {k: after[k] for k in complete} == complete and len(after) == 6
    assert leftovers(out) == []


def test_ctrl_c_cancels_keeps_the_finished_runs_and_exits_130(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as Ctrl-C in a terminal sends it: the driver cancels, the workers
    leave it to the driver (no traceback), the summary keeps what finished and marks the rest cancelled."""
    manifest = write_csv(tmp_path / "cohort.csv", make_cohort(tmp_path, 4, frames=40, size=128, gt=False))
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_command(manifest, out, "--workers", "1", "--method", "flow"), env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob("*/run.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        stop_group(proc)  # the group is gone already; this only waits for that (or cleans up a failure)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    rows = summary(out)
    complete = set(stamps(out))
    assert {i for i, r in rows.items() if r["status"] == "done"} <= complete
    cancelled = {i for i, r in rows.items() if r["status"] == "cancelled"}
    assert cancelled and cancelled | {i for i, r in rows.items() if r["status"] == "done"} == set(rows)
    assert json.loads((out / "summary.json").read_text())["cancelled"] is True
