"""`xrayvos propagate`, `bench --quick` and `info` end to end: files written, JSON progress, errors, cancel."""

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
import torch
from PIL import Image

from XRayVOSLib.cli import main, propagate_cmd
from XRayVOSLib.inference import propagator
from XRayVOSLib.io import read_mask, write_mask
from XRayVOSLib.model.checkpoint import save_checkpoint
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.synth import generate_cine

RUN_KEYS = {"input", "frames", "height", "width", "objects", "supports", "device", "matching", "window",
            "memory_every", "model", "model_trained", "seconds", "fps", "peak_memory_mb", "xrayvos_version"}
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cine(tmp_path_factory) -> dict:
    """A 5-frame 64x64 synthetic cine as .npy and as a PNG folder, with PNG masks of frames 0 and 4."""
    root = tmp_path_factory.mktemp("cine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the generator's exp()
        synth = generate_cine(seed=0, num_frames=5, size=64)
    np.save(root / "cine.npy", synth.frames)
    (root / "frames").mkdir()
    for t, frame in enumerate(synth.frames):
        Image.fromarray(frame).save(root / "frames" / f"frame{t:03d}.png")
    write_mask(root / "m0.png", synth.labels[0])
    write_mask(root / "m4.png", synth.labels[4])
    np.save(root / "empty.npy", np.zeros((64, 64), np.uint8))
    np.save(root / "small.npy", synth.labels[0][:32])
    return {"root": root, "npy": root / "cine.npy", "folder": root / "frames", "labels": synth.labels,
            "m0": root / "m0.png", "m4": root / "m4.png"}


def check_output(out: Path, cine: dict, supports: dict[int, Path]) -> dict:
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(5)]
    assert Image.open(pngs[0]).mode == "P"  # DAVIS palette
    for t, mask in supports.items():
        assert np.array_equal(read_mask(out / f"{t:05d}.png"), read_mask(mask))
    ids = set(np.unique(cine["labels"][0])) - {0}
    for p in pngs:
        assert set(np.unique(read_mask(p))) <= ids | {0}
    record = json.loads((out / "run.json").read_text())
    assert RUN_KEYS <= set(record)
    assert (record["frames"], record["height"], record["width"]) == (5, 64, 64)
    assert record["objects"] == sorted(int(i) for i in ids)
    assert [s["frame"] for s in record["supports"]] == sorted(supports)
    assert record["fps"] > 0 and record["peak_memory_mb"] > 0
    return record


def test_propagate_npy_with_png_support(cine: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(propagator, "default_model_path", lambda: None)  # no checkpoint, whatever models/ holds
    out = tmp_path / "out"
    rc = main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out),
               "--no-jit", "--quiet", "--window", "7", "--memory-every", "2"])
    assert rc == 0
    record = check_output(out, cine, {0: cine["m0"]})
    assert record["matching"] == "local" and record["window"] == 7 and record["memory_every"] == 2
    assert record["device"] == "cpu" and record["model"] == "untrained" and record["model_trained"] is False
    err = capsys.readouterr().err
    assert "warning" in err and "UNTRAINED" in err


@pytest.mark.skipif(propagator.default_model_path() is None, reason="models/ ships no checkpoint here")
def test_propagate_uses_the_shipped_model(cine: dict, tmp_path: Path, capsys) -> None:
    shipped = propagator.default_model_path()
    out = tmp_path / "out"
    assert main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out),
                 "--no-jit", "--quiet"]) == 0
    record = check_output(out, cine, {0: cine["m0"]})
    assert record["model"] == str(shipped) and record["model_trained"] is True
    assert "UNTRAINED" not in capsys.readouterr().err


def test_propagate_png_folder_two_supports_progress_json(cine: dict, tmp_path: Path, capsys) -> None:
    model = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(), info={"trained": True})
    out = tmp_path / "out"
    rc = main(["propagate", str(cine["folder"]), "--support", f"4:{cine['m4']}", "--support", f"0:{cine['m0']}",
               "--out", str(out), "--matching", "global", "--model", str(model), "--no-jit", "--progress-json"])
    assert rc == 0
    record = check_output(out, cine, {0: cine["m0"], 4: cine["m4"]})
    assert record["model"] == str(model) and record["model_trained"] is True and record["matching"] == "global"
    captured = capsys.readouterr()
    assert "UNTRAINED" not in captured.err
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[0] == {"event": "started", "method": "global", "frames": 5, "supports": [0, 4], "device": "cpu"}
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["done"] for e in progress] == list(range(1, 7))  # frames 1..3 twice (two passes)
    assert all(e["total"] == 6 for e in progress)
    assert events[-1]["event"] == "done" and events[-1]["frames"] == 5
    assert Path(events[-1]["run_json"]) == out / "run.json"


def test_propagate_copy_baseline(cine: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--support", f"4:{cine['m4']}",
                 "--out", str(out), "--matching", "copy", "--quiet"]) == 0
    record = check_output(out, cine, {0: cine["m0"], 4: cine["m4"]})
    assert record["model"] is None
    assert np.array_equal(read_mask(out / "00001.png"), read_mask(cine["m0"]))
    assert np.array_equal(read_mask(out / "00003.png"), read_mask(cine["m4"]))


@pytest.mark.parametrize("support, message", [
    ("0-m0.png", "expected T:MASK"),
    ("x:m0.png", "not an integer"),
    ("5:m0.png", "out of range"),
    ("0:absent.png", "does not exist"),
    ("0:empty.npy", "empty"),
    ("0:small.npy", "but frames are 64x64"),
])
def test_bad_support_exits_2_with_one_line(cine: dict, tmp_path: Path, capsys, support: str, message: str) -> None:
    index, _, name = support.partition(":") if ":" in support else (support, "", "")
    spec = f"{index}:{cine['root'] / name}" if name else support
    out = tmp_path / "out"
    rc = main(["propagate", str(cine["npy"]), "--support", spec, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("xrayvos propagate: error:") and message in err[0]
    assert not (out / "run.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_and_missing_input_exit_2(cine: dict, tmp_path: Path, capsys) -> None:
    args = ["--support", f"0:{cine['m0']}", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(["propagate", str(cine["npy"]), "--device", "cuda", *args]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["propagate", str(tmp_path / "nothing.npy"), *args]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["propagate", str(cine["npy"]), "--matching", "nearest", *args]) == 2
    assert "nearest" in capsys.readouterr().err


def test_bad_support_in_a_real_subprocess(cine: dict, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "XRayVOSLib", "propagate", str(cine["npy"]), "--support", f"9:{cine['m0']}",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, **ONE_THREAD_ENV}, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of range" in lines[0] and "Traceback" not in proc.stderr


def test_sigterm_stops_cleanly_without_run_json(cine: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGTERM after the 2nd frame (sent from the progress stream): exit 143, partial PNGs, no run.json."""
    long_cine = tmp_path / "long.npy"
    np.save(long_cine, np.concatenate([np.load(cine["npy"])] * 4))
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{}")  # stale, from an earlier run: must not survive
    real_emit = propagate_cmd.emit

    def emit(obj: dict) -> None:
        real_emit(obj)
        if obj.get("done") == 2 and obj["event"] == "progress":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(propagate_cmd, "emit", emit)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["propagate", str(long_cine), "--support", f"0:{cine['m0']}", "--out", str(out), "--no-jit",
               "--progress-json"])
    assert rc == 128 + signal.SIGTERM
    assert not (out / "run.json").exists()
    assert 3 <= len(list(out.glob("*.png"))) <= 4  # support + 2 frames (+ at most the one in flight)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "cancelled" and events[-1]["done"] <= 3
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_bench_quick_prints_a_table(capsys, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the run is a subprocess
    rc = main(["bench", "--quick", "--size", "64", "--no-jit"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["stride", "objects", "frames", "matching", "fps", "fps_warm", "warmup_s", "peak_MB"]
    row = lines[2].split()
    assert row[:4] == ["16", "1", "20", "local"]
    assert float(row[4]) > 0 and float(row[5]) > 0 and float(row[7]) > 0


def test_bench_cine_is_looped_without_jumps_and_has_the_requested_objects() -> None:
    from XRayVOSLib.inference.bench import _split_objects, make_cine

    frames, support = make_cine(objects=2, frames=70, size=64)
    assert frames.shape == (70, 64, 64) and frames.dtype == np.uint8
    assert set(np.unique(support)) == {0, 1, 2}
    # Played forward then backward (period 58): frame 30 repeats frame 28, frame 58 is frame 0 shifted.
    assert np.array_equal(frames[30], frames[28])
    assert np.array_equal(frames[58], np.roll(frames[0], 1, axis=1))
    one = np.zeros((64, 64), np.uint8)
    one[10:20, 5:60] = 1
    split = _split_objects(one, 5)
    assert set(np.unique(split)) == {0, 1, 2, 3, 4, 5}
    assert np.array_equal(split > 0, one > 0)


def test_info_describes_the_model(tmp_path: Path, capsys) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(), info={"trained": True, "data": "x"})
    assert main(["info", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and str(path) in out and "status         trained" in out and "stride=16" in out
    assert main(["info", "--model", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_trained"] is True and data["model_info"]["data"] == "x" and data["model_config"]["stride"] == 16
