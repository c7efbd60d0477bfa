"""The object threshold: how it moves the label decision, how a model carries it, and `xrayvos calibrate`,
which picks it on validation cines with one propagation per video and agrees with `evaluate` at 0.5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.evaluation.calibrate import calibrate_threshold, calibrated_info
from XRayVOSLib.evaluation.runner import evaluate_methods
from XRayVOSLib.inference.merge import background_scale, probabilities_to_labels
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.checkpoint import read_metadata, rewrite_info, save_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.synth.dataset import write_davis_dataset

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SHIPPED = default_model_path()


def test_threshold_moves_only_the_background_decision() -> None:
    assert background_scale(0.5) == 1.0 and background_scale(0.25) == pytest.approx(1 / 3)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            background_scale(bad)
    # one object: p = 0.4 is background under the arg-max and object 7 at threshold 0.35
    one = np.array([[[0.6, 0.7]], [[0.4, 0.3]]], np.float32)
    assert probabilities_to_labels(one, [7]).tolist() == [[0, 0]]
    assert probabilities_to_labels(one, [7], object_threshold=0.35).tolist() == [[7, 0]]
    # two objects still compete with each other unscaled: the larger one wins, whatever the threshold
    two = np.array([[[0.4]], [[0.25]], [[0.35]]], np.float32)
    assert probabilities_to_labels(two, [3, 9], object_threshold=0.3).tolist() == [[9]]
    assert probabilities_to_labels(two, [3, 9], object_threshold=0.5).tolist() == [[0]]


def test_a_model_carries_its_threshold_and_an_explicit_one_wins(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = save_checkpoint(tmp_path / "plain.safetensors", LocalMatchingNetwork(ModelConfig()), {"trained": True},
                            half=True)
    assert Propagator.load(plain, device="cpu").settings.object_threshold == 0.5
    calibrated = rewrite_info(plain, tmp_path / "cal.safetensors", {"trained": True, "object_threshold": 0.35})
    assert Propagator.load(calibrated, device="cpu").settings.object_threshold == 0.35
    assert Propagator.load(calibrated, device="cpu", object_threshold=0.45).settings.object_threshold == 0.45
    with pytest.raises(InputError, match="object_threshold"):
        Propagator.load(calibrated, device="cpu", object_threshold=1.0)
    # the weights are copied as stored: same names, dtypes (fp16) and values
    with safe_open(str(plain), "pt") as a, safe_open(str(calibrated), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            assert x.dtype == y.dtype and torch.equal(x, y), k
    assert read_metadata(calibrated)[0] == read_metadata(plain)[0]


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("val")
    write_davis_dataset(root, num_videos=2, num_frames=6, size=128, seed=4321)
    return root


@pytest.mark.skipif(SHIPPED is None, reason="models/ ships no checkpoint here")
def test_calibration_scores_every_threshold_and_matches_evaluate(tiny_val: Path) -> None:
    result = calibrate_threshold(tiny_val, SHIPPED, (0.3, 0.5), device="cpu")
    assert set(result["scores"]) == {0.3, 0.5} and result["videos"] == 2 and result["objects"] >= 2
    best = max(result["scores"], key=lambda t: result["scores"][t]["J&F"])
    assert result["best"] == best
    # the same propagation, decided at 0.5, is what `evaluate` scores (calibrate keeps fp16 probabilities,
    # which can flip a pixel sitting on a fused probability of exactly one half)
    reference = evaluate_methods(tiny_val, ["local"], plots=False, model=SHIPPED, device="cpu",
                                 object_threshold=0.5, area_prior=False)["methods"]["local"]["dataset"]
    assert result["scores"][0.5]["J&F"] == pytest.approx(reference["J&F"], abs=1e-4)
    # ... and with the area prior, what `evaluate` scores with it on (the same fp16 caveat)
    with_area = evaluate_methods(tiny_val, ["local"], plots=False, model=SHIPPED, device="cpu",
                                 area_prior=True)["methods"]["local"]["dataset"]
    assert result["area_prior"]["J&F"] == pytest.approx(with_area["J&F"], abs=1e-3)
    assert result["use_area_prior"] == (result["area_prior"]["J&F"] > result["scores"][best]["J&F"])
    assert result["scores"][0.3]["J&F"] != result["scores"][0.5]["J&F"]  # the threshold does change masks
    info = calibrated_info({"trained": True, "source": "x"}, result)
    assert info["object_threshold"] == best and "source" not in info
    assert info["area_prior"] == result["use_area_prior"] and "area_prior_J&F" in info["calibration"]
    assert set(info["calibration"]["J&F"]) == {"0.3", "0.5"}


@pytest.mark.skipif(SHIPPED is None, reason="models/ ships no checkpoint here")
def test_calibrate_cli_writes_a_copy_and_refuses_bad_input(tiny_val: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "calibrated.safetensors"
    code = main(["calibrate", "--data", str(tiny_val), "--model", str(SHIPPED), "--out", str(out),
                 "--thresholds", "0.4,0.5", "--device", "cpu", "--videos", "1"])
    text = capsys.readouterr().out
    assert code == 0 and "<- best" in text and out.is_file()
    _, info = read_metadata(out)
    assert info["object_threshold"] in (0.4, 0.5) and info["calibration"]["videos"] == 1
    assert Propagator.load(out, device="cpu").settings.object_threshold == info["object_threshold"]

    assert main(["calibrate", "--data", str(tiny_val), "--model", str(out), "--out", str(out)]) == 2
    assert "is the input model" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(tiny_val), "--model", str(SHIPPED), "--thresholds", "0.5,1.2"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
