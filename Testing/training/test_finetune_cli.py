"""`xrayvos finetune` as a user meets it: a reused --work-dir resumes only its own run (same data, config and
init) and --restart starts over; numeric flags and the --out location are checked before any work, with
one line (and a JSON error event) instead of a traceback; SIGINT exits 130 with no model written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from XRayVOSLib.cli import main as cli_main
from XRayVOSLib.model.checkpoint import read_metadata, save_checkpoint
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.synth import write_davis_dataset
from XRayVOSLib.training.state import run_fingerprint
from training_helpers import REPO, one_line_error, tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")
TINY = ["--size", "64", "--batch-size", "2", "--device", "cpu", "--progress-json"]


@pytest.fixture(scope="module")
def init_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("init") / "init.safetensors", LocalMatchingNetwork(),
                           {"trained": False})


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other")
    write_davis_dataset(root, num_videos=1, num_frames=6, size=96, seed=7)
    return root


def finetune(capsys, data: Path, init: Path, out: Path, *extra: str) -> tuple[int, list[dict], str]:
    """Run the real CLI in-process: exit code, the JSON events, stderr."""
    code = cli_main(["finetune", "--data", str(data), "--init", str(init), "--out", str(out), *TINY, *extra])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def steps_run(events: list[dict]) -> list[int]:
    return [e["done"] for e in events if e["event"] == "progress"]


def test_a_reused_work_dir_resumes_only_its_own_run(davis_root: Path, other_data: Path, init_model: Path,
                                                    tmp_path: Path, capsys) -> None:
    work, out = tmp_path / "work", tmp_path / "tuned.safetensors"
    code, events, _ = finetune(capsys, davis_root, init_model, out, "--steps", "2", "--work-dir", str(work))
    assert code == 0 and steps_run(events) == [1, 2]
    out.unlink()
    other_init = save_checkpoint(tmp_path / "other_init.safetensors", LocalMatchingNetwork(), {"trained": False})
    refusals = {  # another run's arguments -> what the message says differs
        "data": ((other_data, init_model), (), "training data"),
        "config": ((davis_root, init_model), ("--batch-size", "1"), "training config"),
        "init": ((davis_root, other_init), (), "initial model"),
    }
    for name, ((data, init), extra, what) in refusals.items():
        code, events, err = finetune(capsys, data, init, out, "--steps", "3", "--work-dir", str(work), *extra)
        assert code == 2, name
        line = one_line_error(err)
        assert line.startswith(f"xrayvos finetune: error: work dir {work}: ") and what in line, line
        assert "--restart" in line and events[-1]["event"] == "error" and not steps_run(events), name
        assert not out.exists(), name
    # The same run continues where it stopped: step 3 only.
    code, events, _ = finetune(capsys, davis_root, init_model, out, "--steps", "3", "--work-dir", str(work))
    assert code == 0 and steps_run(events) == [3] and read_metadata(out)[1]["steps"] == 3
    # --restart: the other data's run from step 0, and its metadata says so.
    code, events, _ = finetune(capsys, other_data, init_model, out, "--steps", "2", "--work-dir", str(work),
                               "--restart")
    assert code == 0 and steps_run(events) == [1, 2]
    info = read_metadata(out)[1]
    assert info["steps"] == 2 and info["train_config"]["data"] == str(other_data)


def test_a_two_shot_rerun_resumes_every_stage(davis_root: Path, init_model: Path, tmp_path: Path, capsys) -> None:
    # The pseudo-labels are rewritten (new dates) on each run: the student must still recognise its state.
    work, out = tmp_path / "work", tmp_path / "tuned.safetensors"
    code, events, _ = finetune(capsys, davis_root, init_model, out, "--steps", "2", "--two-shot", "--work-dir",
                               str(work))
    assert code == 0 and steps_run(events) == [1, 2]
    pseudo = next((work / "pseudo").rglob("*.png")).stat().st_mtime_ns
    code, events, _ = finetune(capsys, davis_root, init_model, out, "--steps", "2", "--two-shot", "--work-dir",
                               str(work))
    assert code == 0 and steps_run(events) == [] and events[-1]["event"] == "done"
    assert next((work / "pseudo").rglob("*.png")).stat().st_mtime_ns != pseudo


def test_the_data_fingerprint_follows_the_files(davis_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(davis_root, copy)  # copy2: dates kept
    (copy / "notes.txt").write_text("outside JPEGImages/ and Annotations/: not training data")
    base = run_fingerprint(tiny_config(davis_root, tmp_path / "run"))
    assert run_fingerprint(tiny_config(copy, tmp_path / "elsewhere", steps=50, device="auto")) == base
    frame = next((copy / "Annotations").rglob("*.png"))
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))
    changed = run_fingerprint(tiny_config(copy, tmp_path / "run"))
    assert [k for k in base if base[k] != changed[k]] == ["data"]


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps 0: must be at least 1"),
    ("--steps", "-5", "--steps -5: must be at least 1"),
    ("--size", "0", "--size 0: must be at least 32"),
    ("--size", "72", "--size 72: must be a multiple of 16 (the network's stride)"),
    ("--batch-size", "0", "--batch-size 0: must be at least 1"),
])
def test_numeric_flags_are_checked_before_any_work(init_model: Path, tmp_path: Path, capsys, flag: str,
                                                   value: str, message: str) -> None:
    # The data folder does not exist: the flag's error comes first, so nothing was read or written.
    out, work = tmp_path / "tuned.safetensors", tmp_path / "work"
    code, events, err = finetune(capsys, tmp_path / "absent", init_model, out, "--work-dir", str(work), flag, value)
    assert code == 2 and one_line_error(err) == f"xrayvos finetune: error: {message}"
    assert events == [{"event": "error", "message": message}]
    assert not out.exists() and not work.exists()


def test_the_output_location_is_checked_before_training(davis_root: Path, init_model: Path, tmp_path: Path,
                                                        capsys) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("a regular file")
    (tmp_path / "folder.safetensors").mkdir()
    cases = {  # --out -> the error line (fails for root too)
        plain / "sub" / "m.safetensors": f"{plain} is a file, not a folder",
        tmp_path / "folder.safetensors": "is a folder; give a file name",
    }
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        (locked / "probe").touch()  # as root, chmod does not stop writes: nothing to check there
        (locked / "probe").unlink()
    except PermissionError:
        cases[locked / "m.safetensors"] = f"cannot write in {locked}"
    for out, message in cases.items():
        code, events, err = finetune(capsys, davis_root, init_model, out, "--steps", "1")
        assert code == 2 and message in one_line_error(err), err
        assert [e["event"] for e in events] == ["error"]  # no stage started
    locked.chmod(0o755)
    # An OS error later on (the work dir cannot be created) is one line and a JSON error event too.
    code, events, err = finetune(capsys, davis_root, init_model, tmp_path / "m.safetensors", "--steps", "1",
                                 "--work-dir", str(plain / "work"))
    assert code == 2 and "Not a directory" in one_line_error(err) and events[-1]["event"] == "error"
    assert not (tmp_path / "m.safetensors").exists()


def test_sigint_cancels_with_exit_130_and_no_model(davis_root: Path, init_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned.safetensors"
    cmd = [sys.executable, "-m", "XRayVOSLib", "finetune", "--data", str(davis_root), "--init", str(init_model),
           "--out", str(out), "--steps", "500", *TINY]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        events = []
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "progress":
                proc.send_signal(signal.SIGINT)  # Ctrl+C once training runs
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err
    assert events[-1]["event"] == "cancelled" and 1 <= events[-1]["done"] < 500
    assert "cancelled; no model was written" in one_line_error(err)
    assert not out.exists() and not list(tmp_path.glob(".tuned*"))
