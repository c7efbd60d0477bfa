"""`xrayvos propagate` and `info` end to end: files written, run.json and its settings, JSON progress, errors,
cancel. (`bench` is tested in Testing/inference/test_bench.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from XRayVOSLib import model_files
from XRayVOSLib.cli import main, propagate_cmd
from XRayVOSLib.events import EXIT_CANCELLED
from XRayVOSLib.inference import propagator
from XRayVOSLib.io import read_mask, write_mask
from XRayVOSLib.model.checkpoint import save_checkpoint
from XRayVOSLib.model.config import CONFIG_VERSION
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import generate_cine

RUN_KEYS = {"input", "frames", "height", "width", "objects", "supports", "device", "model", "model_trained",
            "settings", "seconds", "total_seconds", "fps", "peak_memory_mb", "xrayvos_version"}
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
    for module in (propagator, model_files):  # no checkpoint, whatever models/ holds
        monkeypatch.setattr(module, "default_model_path", lambda: None)
    out = tmp_path / "out"
    rc = main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out),
               "--quiet", "--window", "7", "--memory-every", "2"])
    assert rc == 0
    record = check_output(out, cine, {0: cine["m0"]})
    assert record["settings"] == {**RunSettings(window=7, memory_every=2).to_dict(), "device": "cpu"}
    assert record["device"] == "cpu" and record["model"] == "untrained" and record["model_trained"] is False
    err = capsys.readouterr().err
    assert "warning" in err and "UNTRAINED" in err


@pytest.mark.skipif(propagator.default_model_path() is None, reason="models/ ships no checkpoint here")
def test_propagate_uses_the_shipped_model_and_its_settings(cine: dict, tmp_path: Path, capsys) -> None:
    shipped = propagator.default_model_path()
    out = tmp_path / "out"
    assert main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out), "--quiet"]) == 0
    record = check_output(out, cine, {0: cine["m0"]})
    assert record["model"] == str(shipped) and record["model_trained"] is True
    assert record["settings"] == {**RunSettings.from_model(shipped).to_dict(), "device": "cpu"}
    assert "UNTRAINED" not in capsys.readouterr().err


def test_propagate_png_folder_two_supports_progress_json(cine: dict, tmp_path: Path, capsys) -> None:
    model = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(), info={"trained": True})
    out = tmp_path / "out"
    rc = main(["propagate", str(cine["folder"]), "--support", f"4:{cine['m4']}", "--support", f"0:{cine['m0']}",
               "--out", str(out), "--method", "global", "--model", str(model), "--progress-json"])
    assert rc == 0
    record = check_output(out, cine, {0: cine["m0"], 4: cine["m4"]})
    assert record["model"] == str(model) and record["model_trained"] is True
    assert record["settings"]["method"] == "global"
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
                 "--out", str(out), "--method", "copy", "--quiet"]) == 0
    record = check_output(out, cine, {0: cine["m0"], 4: cine["m4"]})
    assert record["model"] is None and record["settings"]["method"] == "copy"
    assert np.array_equal(read_mask(out / "00001.png"), read_mask(cine["m0"]))
    assert np.array_equal(read_mask(out / "00003.png"), read_mask(cine["m4"]))


def test_decision_threshold_is_applied_and_recorded(cine: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(), info={"trained": True})
    areas = {}
    for threshold in ("0.2", "0.8"):
        out = tmp_path / threshold
        assert main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out), "--quiet",
                     "--model", str(model), "--decision", "threshold", "--threshold", threshold]) == 0
        record = check_output(out, cine, {0: cine["m0"]})
        assert record["settings"]["decision"] == "threshold" and record["settings"]["threshold"] == float(threshold)
        areas[threshold] = sum(np.count_nonzero(read_mask(out / f"{t:05d}.png")) for t in range(1, 5))
    assert areas["0.2"] > areas["0.8"]


def test_threshold_without_decision_threshold_exits_2_naming_decision(cine: dict, tmp_path: Path, capsys) -> None:
    """--threshold applies to --decision threshold only; nothing silently switches the area prior off."""
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(),
                            info={"trained": True, "settings": {"decision": "area-prior"}})
    out = tmp_path / "out"
    for extra in ([], ["--decision", "area-prior"]):
        rc = main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out), "--quiet",
                   "--model", str(model), "--threshold", "0.4", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith("xrayvos propagate: error:") and "--decision threshold" in err[0]
        assert not out.exists()  # refused before anything was read or written


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


@pytest.mark.parametrize("option, message", [
    (["--window", "4"], "setting window must be a positive odd number"),
    (["--memory-every", "0"], "setting memory_every must be an integer >= 1"),
    (["--device", "mps"], "setting device must be auto, cpu, cuda or cuda:N"),
    (["--decision", "threshold", "--threshold", "1.0"], "setting threshold must be a number strictly between"),
])
def test_bad_settings_exit_2_with_one_line_naming_the_setting(cine: dict, tmp_path: Path, capsys, option: list,
                                                              message: str) -> None:
    out = tmp_path / "o"
    rc = main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out), "--quiet", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("option", [["--method", "nearest"], ["--decision", "maybe"], ["--matching", "local"],
                                    ["--no-jit"], ["--temporal-blend", "0.5"]])
def test_unknown_choices_and_removed_flags_are_usage_errors(cine: dict, tmp_path: Path, capsys, option: list) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(tmp_path / "o"), *option])
    assert exc.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_bad_support_in_a_real_subprocess(cine: dict, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "XRayVOSLib", "propagate", str(cine["npy"]), "--support", f"9:{cine['m0']}",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, **ONE_THREAD_ENV}, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of range" in lines[0] and "Traceback" not in proc.stderr


def test_sigterm_stops_cleanly_and_keeps_the_earlier_result(cine: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGTERM after the 2nd frame (sent from the progress stream): exit 130, and OUT is exactly the earlier
    result it held (nothing of the cancelled run is kept, nothing is mixed)."""
    long_cine = tmp_path / "long.npy"
    np.save(long_cine, np.concatenate([np.load(cine["npy"])] * 4))
    out = tmp_path / "out"
    assert main(["propagate", str(cine["npy"]), "--support", f"0:{cine['m0']}", "--out", str(out), "--quiet",
                 "--method", "copy"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_emit = propagate_cmd.emit

    def emit(event: str, **fields) -> None:
        real_emit(event, **fields)
        if event == "progress" and fields.get("done") == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(propagate_cmd, "emit", emit)
    before_handler = signal.getsignal(signal.SIGTERM)
    rc = main(["propagate", str(long_cine), "--support", f"0:{cine['m0']}", "--out", str(out), "--progress-json"])
    assert rc == EXIT_CANCELLED == 130
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.npy", "out"]  # no staging folder, no lock
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[-1]["event"] == "cancelled" and events[-1]["done"] <= 3
    assert "SIGTERM" in captured.err and f"{out} is unchanged" in captured.err
    assert signal.getsignal(signal.SIGTERM) == before_handler  # handlers restored


# -- validated before the model loads and before any output exists (issue 20, point 7) ---------------------------


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if propagate gets as far as building the method (loading the model)."""
    def build_method(*args, **kwargs):
        raise AssertionError("the method was built: the input should have been refused first")

    monkeypatch.setattr(propagate_cmd, "build_method", build_method)


def _refused_up_front(args: list, out: Path, capsys, *wanted: str) -> str:
    rc = main(["propagate", *map(str, args), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("xrayvos propagate: error:"), err
    for text in wanted:
        assert text in err[0], err[0]
    assert not out.exists() and not any(".xrayvos-" in p.name for p in out.parent.iterdir())
    return err[0]


def test_object_ids_above_255_are_refused_up_front(cine: dict, tmp_path: Path, capsys, no_model) -> None:
    labels = cine["labels"][0].astype(np.uint16)
    labels[labels > 0] += 299  # ids 300, ...: a 16-bit grey PNG, readable by read_mask
    write_mask(tmp_path / "m16.png", labels)
    assert read_mask(tmp_path / "m16.png").max() > 255
    _refused_up_front([cine["npy"], "--support", f"0:{tmp_path / 'm16.png'}"], tmp_path / "out", capsys,
                      "m16.png", "object id", "above 255")


def test_8x8_frames_are_refused_up_front(tmp_path: Path, capsys, no_model) -> None:
    np.save(tmp_path / "tiny.npy", np.zeros((4, 8, 8), np.uint8))
    np.save(tmp_path / "m.npy", np.ones((8, 8), np.uint8))
    _refused_up_front([tmp_path / "tiny.npy", "--support", f"0:{tmp_path / 'm.npy'}"], tmp_path / "out", capsys,
                      "tiny.npy", "8x8 are too small")


@pytest.mark.parametrize("fault, wanted", [("16-bit", "frame003.png: frame is 16-bit grey"),
                                           ("truncated", "frame003.png: frame is truncated")])
def test_a_bad_frame_in_a_png_folder_is_refused_up_front(cine: dict, tmp_path: Path, capsys, no_model, fault: str,
                                                         wanted: str) -> None:
    folder = tmp_path / "frames"
    shutil.copytree(cine["folder"], folder)
    bad = folder / "frame003.png"
    if fault == "16-bit":
        Image.fromarray(np.asarray(Image.open(bad)).astype(np.uint16) * 256).save(bad)
    else:
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    _refused_up_front([folder, "--support", f"0:{cine['m0']}"], tmp_path / "out", capsys, wanted)


# -- smaller faults (issue 20, point 9) ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["separate", "attached"])
def test_a_negative_support_index_is_out_of_range_not_a_usage_error(cine: dict, tmp_path: Path, capsys, no_model,
                                                                    form: str) -> None:
    spec = f"-1:{cine['m0']}"
    args = ["--support", spec] if form == "separate" else [f"--support={spec}"]
    _refused_up_front([cine["npy"], *args], tmp_path / "out", capsys, "frame -1 is out of range",
                      "the cine has 5 frames (0..4)")


def test_float_support_keys_are_refused_not_truncated(cine: dict) -> None:
    from XRayVOSLib.errors import InputError
    from XRayVOSLib.methods import make_method

    frames, labels = np.load(cine["npy"]), cine["labels"]
    method = make_method(RunSettings(method="copy"))
    with pytest.raises(InputError, match=r"support frame 0\.5: a frame index must be an integer, got float"):
        method.propagate(frames, {0: labels[0], 0.5: labels[4]})  # int(0.5) == 0 once merged the two silently
    with pytest.raises(InputError, match="got bool"):
        method.propagate(frames, {True: labels[0]})
    out = method.propagate(frames, {np.int64(0): labels[0], 4: labels[4]})  # numpy integers are integers
    assert np.array_equal(out[4], labels[4])


def test_a_mid_run_error_is_printed_below_the_progress_bar_not_on_it(phantom_dir: Path, tmp_path: Path) -> None:
    """Frame 5 of the real phantom has a corrupt JPEG stream (its SOI overwritten): flow decodes it mid-run,
    with the bar drawn. The error is a line of its own, the bar closed first; nothing is written."""
    from pydicom import dcmread
    from pydicom.encaps import parse_basic_offsets, parse_fragments

    source = phantom_dir / "IM8.dcm"
    element = dcmread(source, defer_size="4 KB").get_item("PixelData", keep_deferred=True)
    with open(source, "rb") as handle:
        handle.seek(element.value_tell)
        parse_basic_offsets(handle)
        _, offsets = parse_fragments(handle)
    data = bytearray(source.read_bytes())
    data[offsets[5] + 8:offsets[5] + 72] = bytes(64)  # after the item tag and length: FFD8 ... gone
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(bytes(data))
    mask = np.zeros((512, 512), np.uint8)
    mask[240:272, 100:400] = 1
    write_mask(tmp_path / "m0.png", mask)
    proc = subprocess.run(
        [sys.executable, "-m", "XRayVOSLib", "propagate", str(corrupt), "--support", f"0:{tmp_path / 'm0.png'}",
         "--out", str(tmp_path / "out"), "--method", "flow"],
        capture_output=True, text=True, env={**os.environ, **ONE_THREAD_ENV}, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "propagate:" in proc.stderr and "frame" in proc.stderr  # the bar was drawn
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("xrayvos propagate: error: "), proc.stderr
    assert "corrupt pixel data in frame 5" in errors[0]
    assert not (tmp_path / "out").exists()


def test_info_describes_the_model(tmp_path: Path, capsys) -> None:
    carried = {"decision": "threshold", "threshold": 0.4}
    path = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(),
                           info={"trained": True, "data": "x", "settings": carried})
    assert main(["info", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and str(path) in out and "status         trained" in out
    assert f"version={CONFIG_VERSION}" in out and '"threshold": 0.4' in out
    assert main(["info", "--model", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_trained"] is True and data["model_info"]["data"] == "x"
    assert data["model_info"]["settings"] == carried and data["model_config"]["version"] == CONFIG_VERSION
