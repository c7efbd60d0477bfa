"""`xrayvos calibrate` (evaluation/calibrate.py): how a model carries its decision and threshold, and the
calibration that picks them on validation cines with one propagation per video and agrees with `evaluate`.
(The threshold's effect on labels is tested in Testing/propagation/test_decision.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.evaluation.calibrate import calibrate_threshold, calibrated_info, check_thresholds, format_scores
from XRayVOSLib.evaluation.runner import evaluate_methods
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.checkpoint import read_metadata, rewrite_info, save_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth.dataset import write_davis_dataset

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SHIPPED = default_model_path()


def test_a_model_carries_its_decision_and_explicit_settings_win(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = save_checkpoint(tmp_path / "plain.safetensors", LocalMatchingNetwork(ModelConfig()), {"trained": True},
                            half=True)
    assert Propagator.load(plain).settings == RunSettings()  # carries nothing: the defaults
    calibrated = rewrite_info(plain, tmp_path / "cal.safetensors",
                              {"trained": True, "settings": {"decision": "threshold", "threshold": 0.35}})
    loaded = Propagator.load(calibrated)
    assert (loaded.settings.decision, loaded.settings.threshold) == ("threshold", 0.35)
    assert loaded.decision == ("threshold", 0.35)
    explicit = Propagator.load(calibrated, RunSettings.from_model(calibrated, device="cpu", threshold=0.45))
    assert explicit.decision == ("threshold", 0.45)
    with pytest.raises(InputError, match="setting threshold"):
        RunSettings.from_model(calibrated, threshold=1.0)
    # the weights are copied as stored: same names, dtypes (fp16) and values
    with safe_open(str(plain), "pt") as a, safe_open(str(calibrated), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            assert x.dtype == y.dtype and torch.equal(x, y), k
    assert read_metadata(calibrated)[0] == read_metadata(plain)[0]


def test_thresholds_are_checked_sorted_and_deduplicated() -> None:
    assert check_thresholds([0.5, 0.3, 0.3]) == [0.3, 0.5]
    for bad in ([], [0.5, 1.2], [0.0], [float("nan")]):
        with pytest.raises(InputError, match="strictly between 0 and 1"):
            check_thresholds(bad)


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("val")
    write_davis_dataset(root, num_videos=2, num_frames=6, size=128, seed=4321)
    return root


@pytest.mark.skipif(SHIPPED is None, reason="models/ ships no checkpoint here")
def test_calibration_scores_every_threshold_and_matches_evaluate(tiny_val: Path) -> None:
    settings = RunSettings.from_model(SHIPPED, device="cpu")
    result = calibrate_threshold(tiny_val, SHIPPED, (0.3, 0.5), settings=settings)
    assert set(result["scores"]) == {0.3, 0.5} and result["videos"] == 2 and result["objects"] >= 2
    best = max(result["scores"], key=lambda t: result["scores"][t]["J&F"])
    assert result["best"] == best and result["settings"] == settings.to_dict()
    # the same propagation (the model's fusion included), decided at 0.5, is what `evaluate` scores
    # (calibrate keeps fp16 probabilities, which can flip a pixel sitting on a fused probability of one half)
    fixed = settings.replace(decision="threshold", threshold=0.5)
    reference = evaluate_methods(tiny_val, ["local"], plots=False, model=SHIPPED,
                                 settings=fixed)["methods"]["local"]["dataset"]
    assert result["scores"][0.5]["J&F"] == pytest.approx(reference["J&F"], abs=1e-4)
    # ... and with the area prior, what `evaluate` scores with it (the same fp16 caveat)
    with_area = evaluate_methods(tiny_val, ["local"], plots=False, model=SHIPPED,
                                 settings=settings.replace(decision="area-prior"))["methods"]["local"]["dataset"]
    assert result["area_prior_scores"]["J&F"] == pytest.approx(with_area["J&F"], abs=1e-3)
    assert result["decision"] == ("area-prior" if result["area_prior_scores"]["J&F"] > result["scores"][best]["J&F"]
                                  else "threshold")
    assert result["scores"][0.3]["J&F"] != result["scores"][0.5]["J&F"]  # the threshold does change masks
    info = calibrated_info({"trained": True, "source": "x", "settings": {"decision": "threshold"}}, result)
    assert "source" not in info and info["trained"] is True
    assert info["settings"] == {**settings.carried(), "decision": result["decision"], "threshold": best}
    assert RunSettings.from_dict(info["settings"]).carried() == info["settings"]  # a valid carried object
    assert set(info["calibration"]["J&F"]) == {"0.3", "0.5"} and "area_prior_J&F" in info["calibration"]
    assert info["calibration"]["method"] == "local" and info["calibration"]["videos"] == 2
    table = format_scores(result).splitlines()
    assert table[0].split() == ["threshold", "J", "F", "J&F"] and len(table) == 4
    assert sum("<- best" in line for line in table) == 1


@pytest.mark.skipif(SHIPPED is None, reason="models/ ships no checkpoint here")
def test_calibrate_cli_writes_a_copy_and_refuses_bad_input(tiny_val: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "calibrated.safetensors"
    code = main(["calibrate", "--data", str(tiny_val), "--model", str(SHIPPED), "--out", str(out),
                 "--thresholds", "0.4,0.5", "--device", "cpu", "--videos", "1"])
    text = capsys.readouterr().out
    assert code == 0 and "<- best" in text and out.is_file()
    assert "the model carried decision" in text  # the shipped model carries settings
    _, info = read_metadata(out)
    assert info["settings"]["threshold"] in (0.4, 0.5) and info["calibration"]["videos"] == 1
    assert info["settings"]["decision"] in ("area-prior", "threshold")
    assert f"decision {info['settings']['decision']}" in text
    carried = RunSettings.from_model(out)
    assert carried.carried() == info["settings"]
    assert Propagator.load(out).decision == (carried.decision, carried.threshold)
    # the fusion weights the probabilities were computed with are kept
    shipped = RunSettings.from_model(SHIPPED)
    assert (carried.temporal_blend, carried.support_warp) == (shipped.temporal_blend, shipped.support_warp)

    assert main(["calibrate", "--data", str(tiny_val), "--model", str(out), "--out", str(out)]) == 2
    assert "is the input model" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(tiny_val), "--model", str(SHIPPED), "--thresholds", "0.5,1.2"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(tiny_val), "--model", str(SHIPPED), "--window", "4"]) == 2
    assert "setting window" in capsys.readouterr().err
