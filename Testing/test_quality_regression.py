"""Quality regression of the shipped pipeline: `Propagator.load(None)` (models/xrayvos_default.safetensors with
the settings it carries: local matching, output fusion, area prior) on a fixed synthetic set, one support.

Measured when written (torch 2.13 CPU, one thread; the model of commit 18cebb5, config version 6):

    shipped pipeline   J&F 0.9338   J 0.8691   (about 13 s on the 2-core dev machine)
    flow baseline      J&F 0.8191   J 0.6400
    flow-support       J&F 0.9203   J 0.8424   (not asserted: the margin is within what a retrain may move)

Reproduce: `python -m pytest -q -s Testing/test_quality_regression.py` prints the figures. A new shipped model
that scores lower than the floors below is a regression, whatever its validation figures say; a better one
should raise them (to about 2 points below its own figure) in the same commit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from XRayVOSLib.metrics import score_video, summarize
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import generate_cine

SEEDS = (101, 102, 103)  # 2, 5 and 3 objects
FRAMES, SIZE = 20, 256
SHIPPED_JF_FLOOR = 0.914  # measured 0.9338
SHIPPED_J_FLOOR = 0.85  # measured 0.8691: J moves first, F is near 1 on thin objects at this size
FLOW_MARGIN = 0.08  # measured 0.9338 - 0.8191 = 0.115

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(default_model_path() is None, reason="models/ ships no checkpoint here"),
]


@pytest.fixture(scope="module")
def cines() -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the generator's exp()
        return [generate_cine(seed, FRAMES, SIZE) for seed in SEEDS]


def score(method, cines: list) -> dict[str, float]:
    """Mean over objects of J, F and J&F on every non-support frame, as `xrayvos evaluate` scores them."""
    objects = []
    for seed, cine in zip(SEEDS, cines):
        pred = method.propagate(cine.frames, {0: cine.labels[0]})
        np.testing.assert_array_equal(pred[0], cine.labels[0])
        objects.extend(score_video(f"synth_{seed}", pred, {t: cine.labels[t] for t in range(FRAMES)}, [0]))
    dataset = summarize(objects)["dataset"]
    return {k: float(dataset[k]) for k in ("J", "F", "J&F")}


@pytest.fixture(scope="module")
def shipped_scores(cines: list) -> dict[str, float]:
    from XRayVOSLib.inference.propagator import Propagator

    method = Propagator.load(None)
    assert method.trained and method.settings == RunSettings.from_model(None)
    return score(method, cines)


def test_shipped_pipeline_keeps_its_quality(shipped_scores: dict[str, float]) -> None:
    print(f"shipped pipeline: {shipped_scores}")
    assert shipped_scores["J&F"] >= SHIPPED_JF_FLOOR, shipped_scores
    assert shipped_scores["J"] >= SHIPPED_J_FLOOR, shipped_scores


def test_shipped_pipeline_beats_the_flow_baseline(shipped_scores: dict[str, float], cines: list) -> None:
    from XRayVOSLib.methods import make_method

    flow = score(make_method(RunSettings(method="flow")), cines)
    print(f"flow baseline: {flow}")
    assert shipped_scores["J&F"] >= flow["J&F"] + FLOW_MARGIN, (shipped_scores, flow)
