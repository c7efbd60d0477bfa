"""`xrayvos bench` (inference/bench.py): the variants it compares, real runs in fresh subprocesses, the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.inference.bench import VARIANTS, _split_objects, make_cine, variant_settings
from XRayVOSLib.settings import RunSettings

HEAD = ["objects", "frames", "variant", "fps", "fps_warm", "warmup_s", "peak_MB", "x", "shipped"]


def test_variants_are_the_shipped_settings_with_one_thing_changed() -> None:
    shipped = RunSettings(decision="area-prior", threshold=0.35, temporal_blend=0.85, support_warp=0.15, window=9)
    assert VARIANTS == ("shipped", "network", "global", "flow", "flow-support", "copy")
    assert variant_settings("shipped", shipped) is shipped
    network = variant_settings("network", shipped)
    assert network == shipped.replace(temporal_blend=0.0, support_warp=0.0, decision="threshold")
    assert network.threshold == 0.35 and not network.fused  # the network alone, at its own fixed threshold
    assert variant_settings("global", shipped) == shipped.replace(method="global")
    for name in ("flow", "flow-support", "copy"):
        assert variant_settings(name, shipped).method == name
    with pytest.raises(InputError, match="unknown bench variant 'fast'"):
        variant_settings("fast", shipped)


def test_bench_cine_is_looped_without_jumps_and_has_the_requested_objects() -> None:
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


def rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    assert lines[0].split() == HEAD and set(lines[1]) == {"-"}
    return [line.split() for line in lines[2:] if line.split() and line.split()[0].isdigit()]


def test_bench_quick_prints_a_table(capsys, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the run is a subprocess
    assert main(["bench", "--quick", "--size", "64", "--no-jit"]) == 0
    out = capsys.readouterr().out
    (row,) = rows(out)
    assert row[:3] == ["1", "20", "shipped"] and row[-1] == "x1.00"
    assert float(row[3]) > 0 and float(row[4]) > 0 and float(row[6]) > 0
    assert "64x64" in out and "TorchScript off" in out and "decision area-prior" in out


def test_bench_compares_the_shipped_pipeline_with_the_variants(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    json_path = tmp_path / "bench.json"
    assert main(["bench", "--size", "64", "--frames", "8", "--objects", "2", "--compare", "shipped,network,flow,copy",
                 "--no-jit", "--json", str(json_path)]) == 0
    table = rows(capsys.readouterr().out)
    assert [r[2] for r in table] == ["shipped", "network", "flow", "copy"]
    assert all(r[:2] == ["2", "8"] and float(r[3]) > 0 for r in table)
    assert table[0][-1] == "x1.00"
    results = json.loads(json_path.read_text())
    assert [r["variant"] for r in results] == ["shipped", "network", "flow", "copy"]
    assert results[1]["settings"]["temporal_blend"] == 0.0 and results[1]["settings"]["decision"] == "threshold"
    assert results[2]["settings"]["method"] == "flow" and results[2]["note"] == "baseline"
    assert results[0]["trained"] is True and results[0]["objects"] == 2


def test_bench_refuses_bad_options(capsys) -> None:
    assert main(["bench", "--compare", "shipped,fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compare" in err[0] and "fast" in err[0]
    assert main(["bench", "--threshold", "0.4"]) == 2
    assert "--decision threshold" in capsys.readouterr().err
    assert main(["bench", "--size", "32"]) == 2
    assert "--size 32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--stride", "8"])  # the matching stride is fixed (16): no option
    assert exc.value.code == 2
