"""XRayVOSLib.outputs and the commands that write through it (issue 20, points 2 and 3): output locations
checked before any work, OS errors as one line (and a JSON "error" event), atomic files that never follow a
symlink, a full disk (a real file-size limit, and a real small tmpfs) that leaves no partial file and the
earlier result intact, result folders that are replaced completely, never mixed, and locked against a
second, concurrent `xrayvos propagate` process."""

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

from XRayVOSLib import outputs
from XRayVOSLib.cli.propagate_cmd import PROPAGATE_RESULT
from XRayVOSLib.io import read_mask, write_mask
from XRayVOSLib.outputs import OutputError, OutputFolder, atomic_open, check_file_target
from XRayVOSLib.synth import generate_cine

posix_only = pytest.mark.skipif(os.name != "posix", reason="file-size limits, signals and mounts are POSIX")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def cine(tmp_path_factory) -> dict:
    """Synthetic 64x64 cines of 8 and 5 frames (.npy), the mask of frame 0 and a large noisy mask."""
    root = tmp_path_factory.mktemp("cine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        synth = generate_cine(seed=0, num_frames=8, size=64)
    np.save(root / "c8.npy", synth.frames)
    np.save(root / "c5.npy", synth.frames[:5])
    np.save(root / "c40.npy", np.concatenate([synth.frames] * 5))
    write_mask(root / "m0.png", synth.labels[0])
    write_mask(root / "noise.png", np.random.default_rng(0).integers(0, 4, (64, 64)).astype(np.uint8))
    return {"root": root, "labels": synth.labels, **{p.stem: p for p in root.iterdir()}}


def propagate(*args: object, preexec=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`xrayvos propagate ...` in a real process."""
    return subprocess.run([sys.executable, "-m", "XRayVOSLib", "propagate", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout, preexec_fn=preexec)


def one_error_line(proc: subprocess.CompletedProcess, *wanted: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("xrayvos propagate: error:"), lines
    for text in wanted:
        assert text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Staging folders, old results, lock and temporary files an output leaves beside itself."""
    return sorted(p.name for p in parent.rglob("*") if "xrayvos-" in p.name)


# -- atomic files ---------------------------------------------------------------------------------------------


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "00000.png").symlink_to(victim)
    write_mask(tmp_path / "00000.png", np.ones((4, 4), np.uint8))
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "00000.png").is_symlink() and read_mask(tmp_path / "00000.png").sum() == 16


def test_a_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path: Path, monkeypatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    tokens = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: next(tokens))
    planted = tmp_path / f"{outputs.TEMP_PREFIX}aaaaaaaa-run.json"
    planted.symlink_to(victim)
    outputs.write_json_atomic(tmp_path / "run.json", {"a": 1})
    assert victim.read_text() == "keep me" and planted.is_symlink()  # the planted name was skipped
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["victim.txt", planted.name, "run.json"])


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "labels.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy"]


# -- output locations checked before any work -------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder nobody can write in: permission bits for a normal user; for root (who ignores them) a
    read-only tmpfs mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_check_file_target_refuses_folders_files_above_and_read_only_folders(tmp_path: Path,
                                                                             read_only_dir: Path) -> None:
    (tmp_path / "file").write_text("x")
    for target, problem in [(tmp_path, "is a folder"), (tmp_path / "file" / "out.json", "is a file, not a folder"),
                            (tmp_path / "file" / "a" / "b.json", "is a file, not a folder"),
                            (read_only_dir / "out.json", "cannot write in"),
                            (read_only_dir / "sub" / "out.json", "cannot write in")]:
        with pytest.raises(OutputError, match=problem) as info:
            check_file_target(target, "--json")
        assert str(info.value).startswith(f"--json {target}:")
    assert check_file_target(tmp_path / "new" / "x.json", "--json") == tmp_path / "new" / "x.json"
    assert not (tmp_path / "new").exists()  # a check creates nothing


@pytest.mark.parametrize("where, problem", [("file", "exists and is not a folder"),
                                            ("file/out", "is a file, not a folder"),
                                            ("ro/out", "cannot write in"),
                                            ("link", "is a symbolic link")])
def test_propagate_refuses_an_unusable_out_in_one_line_with_an_error_event(cine: dict, tmp_path: Path,
                                                                           read_only_dir: Path, where: str,
                                                                           problem: str) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    proc = propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", tmp_path / where, "--method", "copy",
                     "--progress-json")
    one_error_line(proc, problem)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events] == ["error"] and problem in events[0]["message"]  # before "started"
    assert (tmp_path / "file").read_text() == "x" and not any((tmp_path / "elsewhere").iterdir())
    assert leftovers(tmp_path) == []


# -- a full disk --------------------------------------------------------------------------------------------------


def file_size_limit(nbytes: int):
    def limit() -> None:  # runs in the child before exec; an ignored signal stays ignored across exec
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@posix_only
def test_a_file_size_limit_mid_run_keeps_the_earlier_result_and_leaves_no_partial_png(cine: dict,
                                                                                   tmp_path: Path) -> None:
    """The noisy support PNG (about 2.2 kB) cannot be written under a 1.5 kB limit, the small one (1 kB)
    can: the old code left a truncated 00004.png in OUT."""
    assert cine["m0"].stat().st_size < 1500 < cine["noise"].stat().st_size
    out = tmp_path / "out"
    assert propagate(cine["c8"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy").returncode == 0
    before = snapshot(out)
    proc = propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--support", f"4:{cine['noise']}", "--out", out,
                     "--method", "copy", "--progress-json", preexec=file_size_limit(1500))
    line = one_error_line(proc, f"{out / '00004.png'}: cannot write", "File too large", f"{out} is unchanged")
    assert ".xrayvos-" not in line  # the file as the user knows it, not the staging name
    events = [json.loads(text) for text in proc.stdout.splitlines()]
    assert events[0]["event"] == "started" and events[-1] == {"event": "error", "message": line.split("error: ", 1)[1]}
    assert snapshot(out) == before and leftovers(tmp_path) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 64 KiB file system (root only: mounting needs it)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("needs root and tmpfs to build a small real disk (the file-size limit test runs anywhere)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_mid_run_leaves_nothing_and_says_so(cine: dict, small_tmpfs: Path) -> None:
    """40 frames of about 1 kB each take a 4 KiB page each: the disk fills after about 16 of them."""
    out = small_tmpfs / "out"
    proc = propagate(cine["c40"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy", "--progress-json")
    line = one_error_line(proc, "No space left on device", f"{out} is unchanged")
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "error"
    assert "png" in line or "run.json" in line
    assert list(small_tmpfs.iterdir()) == []  # no OUT, no staging folder, no lock, no 0-byte PNG


# -- owning the output folder -------------------------------------------------------------------------------------


def test_a_second_run_replaces_an_earlier_longer_result_completely(cine: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert propagate(cine["c8"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy").returncode == 0
    assert len(list(out.glob("*.png"))) == 8
    proc = propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy", "--quiet")
    assert proc.returncode == 0, proc.stderr
    # the new run's frames only (beside them run.json and the run's confidence and pass cache)
    assert sorted(p.name for p in out.glob("*.png")) == [f"{t:05d}.png" for t in range(5)]
    assert json.loads((out / "run.json").read_text())["frames"] == 5
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content, problem", [
    ({"notes.txt": "mine"}, "is not empty and is not an earlier XRayVOS result"),
    ({"run.json": '{"someone": "else"}', "00000.png": ""}, "is not an earlier XRayVOS result"),
    ("earlier+notes.txt", "holds an earlier result and also notes.txt"),
])
def test_a_folder_that_is_not_an_earlier_result_is_refused_untouched(cine: dict, tmp_path: Path, content,
                                                                     problem: str) -> None:
    out = tmp_path / "out"
    if content == "earlier+notes.txt":
        assert propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy").returncode == 0
        content = {"notes.txt": "mine"}
    out.mkdir(exist_ok=True)
    for name, text in content.items():
        (out / name).write_text(text)
    before = snapshot(out)
    one_error_line(propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy"), problem)
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_a_support_mask_inside_out_is_refused(cine: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy").returncode == 0
    corrected = out / "00003.png"  # a user corrects a result frame in place and propagates from it
    write_mask(corrected, cine["labels"][3])
    before = snapshot(out)
    one_error_line(propagate(cine["c5"], "--support", f"3:{corrected}", "--out", out, "--method", "copy"),
                   f"holds {corrected}, which this run reads")
    assert snapshot(out) == before


def test_what_a_killed_commit_left_is_put_back(tmp_path: Path) -> None:
    """Killed between the two renames of a commit: OUT is missing and the earlier result sits beside it."""
    old = tmp_path / ".out.xrayvos-old-0123abcd"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"xrayvos_version": "x", "frames": 1, "supports": [], "settings": {}}))
    (old / "00000.png").write_bytes(b"png")
    partial = tmp_path / ".out.xrayvos-new-4567cdef"
    partial.mkdir()
    (partial / "00000.png").write_bytes(b"half")
    with OutputFolder(tmp_path / "out", PROPAGATE_RESULT) as out:
        assert snapshot(out.path) == {"00000.png": b"png", "run.json": (tmp_path / "out" / "run.json").read_bytes()}
        assert not old.exists() and not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_uncommitted_run_changes_nothing_and_removes_the_folders_it_made(tmp_path: Path) -> None:
    with OutputFolder(tmp_path / "a" / "b" / "out", PROPAGATE_RESULT) as out:
        (out.stage() / "00000.png").write_bytes(b"png")
        assert (tmp_path / "a" / "b").is_dir()
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_two_concurrent_propagate_processes_into_one_folder(cine: dict, tmp_path: Path) -> None:
    """The first run is paused (SIGSTOP) once it has started writing; the second is refused at once, naming
    the first's pid; the first then finishes alone, and afterwards the folder is free again."""
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "XRayVOSLib", "propagate", str(cine["c40"]), "--support",
                              f"0:{cine['m0']}", "--out", str(out), "--method", "flow", "--progress-json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for line in first.stdout:
            if json.loads(line)["event"] == "progress":
                break
        first.send_signal(signal.SIGSTOP)
        second = propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy")
        one_error_line(second, f"another xrayvos run (pid {first.pid}) is writing this folder")
        assert not out.exists()  # the first writes into its staging folder; the second wrote nothing
    finally:
        first.send_signal(signal.SIGCONT)
    rest, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert json.loads(rest.splitlines()[-1])["event"] == "done"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{t:05d}.png" for t in range(40)]
    assert json.loads((out / "run.json").read_text())["settings"]["method"] == "flow"
    assert leftovers(tmp_path) == []
    again = propagate(cine["c5"], "--support", f"0:{cine['m0']}", "--out", out, "--method", "copy", "--quiet")
    assert again.returncode == 0 and len(list(out.glob("*.png"))) == 5


def test_the_lock_refuses_a_second_claim_in_the_same_process(tmp_path: Path) -> None:
    with OutputFolder(tmp_path / "out", PROPAGATE_RESULT):
        with pytest.raises(OutputError, match=rf"another xrayvos run \(pid {os.getpid()}\)"):
            with OutputFolder(tmp_path / "out", PROPAGATE_RESULT):
                pass
    with OutputFolder(tmp_path / "out", PROPAGATE_RESULT):  # released: free again
        pass


def test_outputs_imports_only_the_standard_library() -> None:
    code = ("import sys, XRayVOSLib.outputs; bad = [m for m in ('numpy', 'torch', 'PIL') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_root_folder_is_never_a_result_folder() -> None:
    with pytest.raises(OutputError, match="root cannot be a result folder"):
        OutputFolder(Path(os.path.abspath(os.sep)), PROPAGATE_RESULT)
