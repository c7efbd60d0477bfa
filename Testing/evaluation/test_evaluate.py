"""`evaluate_methods` / `xrayvos evaluate` and `xrayvos eval` on a small synthetic DAVIS-layout data set."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from XRayVOSLib.cli import main
from XRayVOSLib.evaluation import evaluate_methods, read_frames
from XRayVOSLib.io import read_mask_folder
from XRayVOSLib.metrics import dice, f_measure, hd95, j_measure
from XRayVOSLib.settings import RunSettings

METHODS = ["flow", "copy"]
VIDEOS = ["synth_0000", "synth_0001"]


def num_objects(root: Path) -> dict[str, int]:
    return {v: len(set(np.unique(read_mask_folder(root / "Annotations" / v)[0])) - {0}) for v in VIDEOS}


def direct_scores(pred: dict[int, np.ndarray], gt: dict[int, np.ndarray], supports: list[int],
                  spacing=None) -> dict[int, dict]:
    """Per-object means computed straight from the single-frame metric functions."""
    frames = [t for t in sorted(gt) if t not in supports]
    ids = sorted(set(np.unique(np.concatenate([gt[t].ravel() for t in supports]))) - {0})
    out = {}
    for oid in ids:
        p = [pred[t] == oid for t in frames]
        g = [gt[t] == oid for t in frames]
        out[oid] = {
            "J": np.mean([j_measure(a, b) for a, b in zip(p, g)]),
            "F": np.mean([f_measure(a, b) for a, b in zip(p, g)]),
            "dice": np.mean([dice(a, b) for a, b in zip(p, g)]),
            "hd95": np.mean([h for h in (hd95(a, b) for a, b in zip(p, g)) if np.isfinite(h)]),
        }
        if spacing is not None:
            out[oid]["hd95_mm"] = np.mean([h for h in (hd95(a, b, spacing) for a, b in zip(p, g)) if np.isfinite(h)])
    return out


def test_evaluate_methods_writes_outputs_matching_direct_metrics(davis_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "eval"
    settings = RunSettings(window=9, decision="threshold", threshold=0.4)
    results = evaluate_methods(davis_root, METHODS, supports="first", out_dir=out, save_masks=True, settings=settings)
    videos = results["videos"]
    assert videos == VIDEOS
    total_objects = sum(num_objects(davis_root).values())
    assert total_objects >= 3
    expected_files = ["results.json", "results.csv"] + [f"j_curve_{v}.png" for v in videos] + [
        f"worst_{m}.png" for m in METHODS
    ]
    for name in expected_files:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in expected_files[2:]:
        with Image.open(out / name) as img:
            assert img.size[0] > 100 and img.size[1] > 100

    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"] == settings.to_dict() and saved["model"] is None  # each method ran with its own name
    meta = json.loads((davis_root / "meta.json").read_text())
    all_objects = []
    for method in METHODS:
        m = saved["methods"][method]
        assert m["fps"] > 0
        for video in videos:
            gt = read_mask_folder(davis_root / "Annotations" / video)
            pred = read_mask_folder(out / "masks" / method / video)
            spacing = meta["videos"][video]["spacing"]
            expected = direct_scores(pred, gt, saved["support_frames"][video], spacing)
            rows = {r["object"]: r for r in m["objects"] if r["video"] == video}
            assert sorted(rows) == sorted(expected)
            for oid, exp in expected.items():
                for key, value in exp.items():
                    assert rows[oid][key] == pytest.approx(value, abs=1e-9), (method, video, oid, key)
                per_frame = m["per_frame_J"][video][str(oid)]
                assert sorted(int(t) for t in per_frame) == list(range(1, 8))  # support frame 0 excluded
                assert np.mean(list(per_frame.values())) == pytest.approx(exp["J"])
            all_objects += [(method, e) for e in expected.values()]
        dataset_j = np.mean([e["J"] for meth, e in all_objects if meth == method])
        assert m["dataset"]["J"] == pytest.approx(dataset_j)  # mean over objects, not videos
        assert m["dataset"]["J&F"] == pytest.approx((m["dataset"]["J"] + m["dataset"]["F"]) / 2)
    assert "hd95_mm" in saved["methods"]["flow"]["dataset"]  # spacing from the synthetic set's meta.json

    # the copy baseline is deterministic: the saved masks are what a direct run gives
    frames = read_frames(davis_root / "JPEGImages" / "synth_0001")
    gt_b = read_mask_folder(davis_root / "Annotations" / "synth_0001")
    from XRayVOSLib.methods import make_method

    direct = make_method(RunSettings(method="copy")).propagate(frames, {0: gt_b[0]})
    saved_masks = read_mask_folder(out / "masks" / "copy" / "synth_0001")
    np.testing.assert_array_equal(np.stack(list(saved_masks.values())), direct)

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(METHODS) * total_objects
    flow_a = next(r for r in rows if r["method"] == "flow" and r["video"] == "synth_0000")
    assert float(flow_a["J"]) == pytest.approx(
        next(o for o in saved["methods"]["flow"]["objects"] if o["video"] == "synth_0000")["J"]
    )


def test_first_middle_and_file_supports(davis_root: Path, tmp_path: Path) -> None:
    results = evaluate_methods(davis_root, ["copy"], supports="first+middle", videos=1)
    assert results["videos"] == ["synth_0000"] and results["support_frames"] == {"synth_0000": [0, 4]}
    frames_scored = results["methods"]["copy"]["per_frame_J"]["synth_0000"]["1"]  # every synth video has object 1
    assert sorted(int(t) for t in frames_scored) == [1, 2, 3, 5, 6, 7]
    spec = tmp_path / "supports.json"
    spec.write_text(json.dumps({"synth_0000": [7], "synth_0001": [2, 5]}))
    results = evaluate_methods(davis_root, ["copy"], supports=spec)
    assert results["support_frames"] == {"synth_0000": [7], "synth_0001": [2, 5]}


def test_eval_cli_scores_folders_and_names_missing_frames(davis_root: Path, tmp_path: Path, capsys) -> None:
    pred_root = tmp_path / "pred"
    results = evaluate_methods(davis_root, ["copy"], out_dir=tmp_path / "run", save_masks=True, plots=False)
    shutil.copytree(tmp_path / "run" / "masks" / "copy", pred_root)
    gt_root = davis_root / "Annotations"
    assert main(["eval", str(gt_root), str(pred_root), "--json", str(tmp_path / "eval.json")]) == 0
    table = capsys.readouterr().out
    total = sum(num_objects(davis_root).values())
    assert "synth_0000" in table and "synth_0001" in table and f"all ({total} objects)" in table
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["dataset"]["J"] == pytest.approx(results["methods"]["copy"]["dataset"]["J"])
    assert scored["dataset"]["hd95"] == pytest.approx(results["methods"]["copy"]["dataset"]["hd95"])

    (pred_root / "synth_0001" / "00003.png").unlink()
    (pred_root / "synth_0001" / "00006.png").unlink()
    assert main(["eval", str(gt_root), str(pred_root)]) == 2
    err = capsys.readouterr().err
    assert "synth_0001" in err and "3, 6" in err
    (pred_root / "synth_0000" / "00000.png").unlink()  # a support frame is part of the prediction too
    assert main(["eval", str(gt_root), str(pred_root)]) == 2
    assert "synth_0000" in capsys.readouterr().err


def test_eval_cli_supports_file_and_partial_ground_truth(davis_root: Path, tmp_path: Path, capsys) -> None:
    gt_root = tmp_path / "gt"
    for video in VIDEOS:
        (gt_root / video).mkdir(parents=True)
        for t in (0, 3, 6):  # only every third frame annotated
            shutil.copy(davis_root / "Annotations" / video / f"{t:05d}.png", gt_root / video)
    spec = tmp_path / "supports.json"
    spec.write_text(json.dumps({"synth_0000": [0, 3], "synth_0001": [0]}))
    pred_root = davis_root / "Annotations"  # the full ground truth as a perfect prediction
    assert main(["eval", str(gt_root), str(pred_root), "--supports", str(spec),
                 "--json", str(tmp_path / "o.json")]) == 0
    scored = json.loads((tmp_path / "o.json").read_text())
    assert all(frames == {"6": 1.0} for frames in scored["per_frame_J"]["synth_0000"].values())
    assert all(set(frames) == {"3", "6"} for frames in scored["per_frame_J"]["synth_0001"].values())
    assert scored["dataset"]["J"] == 1.0 and scored["dataset"]["hd95"] == 0.0
    capsys.readouterr()
    spec.write_text(json.dumps({"synth_0000": [0]}))
    assert main(["eval", str(gt_root), str(pred_root), "--supports", str(spec)]) == 2
    assert "synth_0001" in capsys.readouterr().err


def test_evaluate_cli_prints_summary_and_rejects_unknown_methods(davis_root: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cli"
    assert main(["evaluate", "--data", str(davis_root), "--methods", "copy", "--out", str(out), "--videos", "1"]) == 0
    printed = capsys.readouterr().out
    assert "copy" in printed and "J&F" in printed and "fps" in printed
    assert (out / "results.json").is_file() and (out / "j_curve_synth_0000.png").is_file()
    assert main(["evaluate", "--data", str(davis_root), "--methods", "copy,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_cli_records_the_settings_flags(davis_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["evaluate", "--data", str(davis_root), "--methods", "copy,flow", "--out", str(out), "--videos", "1",
                 "--window", "9", "--decision", "threshold", "--threshold", "0.4", "--temporal-blend", "0",
                 "--support-warp", "0.5"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["method"] == "copy"  # the first method's; each method runs under its own name
    assert {k: saved["settings"][k] for k in ("window", "decision", "threshold", "temporal_blend", "support_warp")} \
        == {"window": 9, "decision": "threshold", "threshold": 0.4, "temporal_blend": 0.0, "support_warp": 0.5}
    assert set(saved["methods"]) == {"copy", "flow"}
    capsys.readouterr()


def test_evaluate_threshold_without_decision_threshold_exits_2(davis_root: Path, tmp_path: Path, capsys) -> None:
    rc = main(["evaluate", "--data", str(davis_root), "--methods", "copy", "--out", str(tmp_path / "o"),
               "--threshold", "0.4", "--decision", "area-prior"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--decision threshold" in err[0], err
    assert not (tmp_path / "o").exists()
    assert main(["evaluate", "--data", str(davis_root), "--methods", "copy", "--support-warp", "-0.1"]) == 2
    assert "setting support_warp" in capsys.readouterr().err


# -- outputs checked first, replaced whole; counts range-checked (issue 20, points 2, 3 and 9) --------------------


def _one_error_line(capsys, command: str, *wanted: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"xrayvos {command}: error:"), err
    for text in wanted:
        assert text in err[0], err[0]
    return err[0]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fails the test if a method is built or a prediction scored: the output should be refused first."""
    from XRayVOSLib import methods
    from XRayVOSLib.evaluation import runner

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output location was checked")

    monkeypatch.setattr(methods, "make_method", refuse)
    monkeypatch.setattr(runner, "evaluate_folders", refuse)


def test_evaluate_out_on_a_file_is_refused_before_any_method_runs(davis_root: Path, tmp_path: Path, capsys,
                                                                  nothing_runs) -> None:
    (tmp_path / "file").write_text("x")
    for out, problem in [(tmp_path / "file", "exists and is not a folder"),
                         (tmp_path / "file" / "sub", f"{tmp_path / 'file'} is a file, not a folder")]:
        assert main(["evaluate", "--data", str(davis_root), "--methods", "copy", "--out", str(out)]) == 2
        _one_error_line(capsys, "evaluate", f"--out {out}: {problem}")
    assert (tmp_path / "file").read_text() == "x"


def test_eval_json_that_cannot_be_written_is_refused_before_scoring(davis_root: Path, tmp_path: Path, capsys,
                                                                    nothing_runs) -> None:
    gt = str(davis_root / "Annotations")
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    for target, problem in [(tmp_path / "folder", "is a folder; give a file name"),
                            (tmp_path / "file" / "eval.json", f"{tmp_path / 'file'} is a file, not a folder")]:
        assert main(["eval", gt, gt, "--json", str(target)]) == 2
        _one_error_line(capsys, "eval", f"--json {target}: {problem}")


def test_evaluate_out_is_replaced_completely_and_a_strangers_folder_refused(davis_root: Path, tmp_path: Path,
                                                                            capsys) -> None:
    out = tmp_path / "out"
    evaluate_methods(davis_root, ["copy", "flow"], out_dir=out, save_masks=True, plots=False)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["copy", "flow"]
    assert main(["evaluate", "--data", str(davis_root), "--methods", "copy", "--out", str(out), "--videos", "1",
                 "--save-masks"]) == 0
    assert sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*") if p.is_dir()) == [
        "copy", "copy/synth_0000"]  # nothing left of the earlier, larger run
    assert json.loads((out / "results.json").read_text())["videos"] == ["synth_0000"]
    capsys.readouterr()
    (out / "my_notes.txt").write_text("mine")
    assert main(["evaluate", "--data", str(davis_root), "--methods", "copy", "--out", str(out)]) == 2
    _one_error_line(capsys, "evaluate", "also my_notes.txt")
    assert (out / "my_notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("videos", [["--videos", "0"], ["--videos=-1"], ["--videos", "-1"]])
def test_evaluate_videos_below_1_is_a_usage_error(davis_root: Path, capsys, videos: list) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--data", str(davis_root), "--methods", "copy", *videos])
    assert exc.value.code == 2 and "argument --videos" in capsys.readouterr().err


@pytest.mark.parametrize("videos", [0, -1, True])
def test_evaluate_methods_refuses_a_video_count_below_1(davis_root: Path, videos) -> None:
    """names[:0] ran nothing and names[:-1] silently dropped the last video."""
    from XRayVOSLib.errors import InputError

    with pytest.raises(InputError, match="is not a number of videos >= 1"):
        evaluate_methods(davis_root, ["copy"], videos=videos)
