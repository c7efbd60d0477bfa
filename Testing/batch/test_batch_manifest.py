"""The batch manifest (CSV and JSON lines) and the resume fingerprint, without a cluster: what is refused
up front, and which earlier results count as complete."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from batch_cohort import make_cohort, write_csv

from XRayVOSLib.batch import read_manifest
from XRayVOSLib.batch.runner import _Plan
from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.io import read_mask, write_mask
from XRayVOSLib.run_one import fingerprint
from XRayVOSLib.settings import RunSettings


def test_csv_and_json_lines_give_the_same_runs_with_paths_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    csv_path = tmp_path / "sub" / "m.csv"
    csv_path.write_text("id,cine,supports,gt\n"
                        'a1,c.npy,0:m0.png;9:/abs/m9.png,gt\n'
                        "\n"
                        'B-2.x,"dir, with comma/c.dcm", 3:m3.png ,\n')
    json_path = tmp_path / "sub" / "m.jsonl"
    json_path.write_text(json.dumps({"id": "a1", "cine": "c.npy", "supports": ["0:m0.png", "9:/abs/m9.png"],
                                     "gt": "gt"}) + "\n\n"
                         + json.dumps({"id": "B-2.x", "cine": "dir, with comma/c.dcm", "supports": "3:m3.png"}))
    base = (tmp_path / "sub").resolve()
    for path in (csv_path, json_path):
        a, b = read_manifest(path)
        assert (a.id, a.cine, a.gt) == ("a1", base / "c.npy", base / "gt")
        assert a.supports == (f"0:{base / 'm0.png'}", "9:/abs/m9.png") and a.support_frames == [0, 9]
        assert (b.id, b.cine, b.gt, b.supports) == ("B-2.x", base / "dir, with comma" / "c.dcm", None,
                                                    (f"3:{base / 'm3.png'}",))


@pytest.mark.parametrize("text, wanted", [
    ("id,cine,support\nx,c.npy,0:m.png\n", "unknown 'support'; missing supports"),
    ("id,cine,supports\nx,c.npy,0:m.png\nX,d.npy,0:m.png\n", "line 3: id 'X' is also on line 2"),
    ("id,cine,supports\n../up,c.npy,0:m.png\n", "line 2: id '../up' cannot name a folder"),
    ("id,cine,supports\nsummary.csv,c.npy,0:m.png\n", "cannot name a folder"),
    ("id,cine,supports\nx,c.npy,\n", "line 2: no supports"),
    ("id,cine,supports\nx,,0:m.png\n", "line 2: no cine"),
    ("id,cine,supports\nx,c.npy,first:m.png\n", "line 2: support 'first:m.png': frame index 'first' is not"),
    ("id,cine,supports\nx,c.npy,0:a.png;0:b.png\n", "line 2: a support frame is given twice"),
    ("id,cine,supports\nx,c.npy,0:m.png,extra\n", "line 2: more values than columns"),
    ("id,cine,supports\n", "lists no runs"),
])
def test_a_malformed_csv_manifest_is_refused_naming_file_and_line(tmp_path: Path, text: str, wanted: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=None) as caught:
        read_manifest(path)
    assert str(path) in str(caught.value) and wanted in str(caught.value), caught.value


@pytest.mark.parametrize("line, wanted", [
    ('["x"]', "line 1: expected a JSON object, got list"),
    ('{"id": "x", "cine": "c.npy", "supports": ["0:m.png"], "mask": "m.png"}', "line 1: unknown 'mask'"),
    ('{"id": "x", "cine": "c.npy", "supports": [0]}', "line 1: supports must be one or more T:MASK"),
    ('{"id": "x", "cine": ', "line 1: not JSON"),
])
def test_a_malformed_json_lines_manifest_is_refused(tmp_path: Path, line: str, wanted: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError) as caught:
        read_manifest(path)
    assert wanted in str(caught.value), caught.value


def test_cli_refuses_a_bad_manifest_in_one_line_before_any_cluster_or_output(tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,cine,supports\nx,c.npy,0:m.png\nx,d.npy,0:m.png\n")
    rc = main(["batch", str(path), "--out", str(tmp_path / "out"), "--method", "flow", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("xrayvos batch: error: manifest"), err
    assert not (tmp_path / "out").exists()


def test_a_result_is_complete_only_with_the_same_settings_model_input_and_supports(tmp_path: Path) -> None:
    """propagate writes the fingerprint; the batch's plan takes the folder as complete while nothing that went
    into it changed, and not after a change of settings, of the support's content, of the cine, or a lost frame."""
    rows = make_cohort(tmp_path, 1, frames=4, size=64, gt=False)
    spec, = read_manifest(write_csv(tmp_path / "m.csv", rows))
    out = tmp_path / "out"
    assert main(["propagate", str(spec.cine), "--support", spec.supports[0], "--out", str(out / "run0"),
                 "--method", "copy", "--quiet"]) == 0
    settings = RunSettings.from_model(None, method="copy")  # as the CLI builds them: the shipped model's carried

    def complete(s: RunSettings = settings) -> bool:
        return _Plan([spec], out, s, None, None, dicom_seg=False, retries=0).complete["run0"] is not None

    record = json.loads((out / "run0" / "run.json").read_text())
    assert record["fingerprint"] == fingerprint(spec.cine, list(spec.supports), settings, None)
    assert record["fingerprint"]["model_sha256"] is None  # copy reads no model
    assert complete() and not complete(settings.replace(window=7))
    assert not _Plan([spec], out, settings, None, None, dicom_seg=True, retries=0).complete["run0"]  # no SEG
    mask = tmp_path / "c0_m0.png"
    labels = read_mask(mask)
    write_mask(mask, np.where(labels == 1, 0, labels))  # same path and size class, other content
    assert not complete()
    write_mask(mask, labels)
    assert complete()
    os.utime(spec.cine, ns=(1, 1))  # the cine's identity: path, size, mtime
    assert not complete()
    assert main(["propagate", str(spec.cine), "--support", spec.supports[0], "--out", str(out / "run0"),
                 "--method", "copy", "--quiet"]) == 0
    assert complete()
    (out / "run0" / "00003.png").unlink()
    assert not complete()
