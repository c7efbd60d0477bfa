"""The decision (propagation/decision.py): probabilities -> labels by one fixed object threshold or by the area
prior (per-object thresholds that keep each object's support area), and RunSettings.decision choosing between
them in a real run of the shipped model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from XRayVOSLib.propagation.decision import (
    AREA_THRESHOLD_MAX,
    AREA_THRESHOLD_MIN,
    Decision,
    area_thresholds,
    background_scale,
    probabilities_to_labels,
    support_areas,
    target_areas,
)
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import generate_cine


def ramp_probs() -> np.ndarray:
    """One object whose probability is 0.01, 0.02, ..., 1.00 over a 10x10 frame."""
    obj = (np.arange(1, 101, dtype=np.float32) / 100).reshape(10, 10)
    return np.stack([1 - obj, obj])


def test_threshold_moves_only_the_background_decision() -> None:
    assert background_scale(0.5) == 1.0 and background_scale(0.25) == pytest.approx(1 / 3)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            background_scale(bad)
    # one object: p = 0.4 is background under the arg-max and object 7 at threshold 0.35
    one = np.array([[[0.6, 0.7]], [[0.4, 0.3]]], np.float32)
    assert probabilities_to_labels(one, [7]).tolist() == [[0, 0]]
    assert probabilities_to_labels(one, [7], threshold=0.35).tolist() == [[7, 0]]
    # two objects still compete with each other unscaled: the larger one wins, whatever the threshold
    two = np.array([[[0.4]], [[0.25]], [[0.35]]], np.float32)
    assert probabilities_to_labels(two, [3, 9], threshold=0.3).tolist() == [[9]]
    assert probabilities_to_labels(two, [3, 9], threshold=0.5).tolist() == [[0]]


def test_labels_from_probabilities_match_argmax_with_ties_and_sparse_ids() -> None:
    rng = np.random.default_rng(3)
    probs = rng.integers(0, 4, (4, 30, 40)).astype(np.float32) / 4  # few levels: many exact ties
    ids = [3, 7, 200]
    expected = np.array([0] + ids, np.uint8)[np.argmax(probs, axis=0)]  # ties go to the lower channel
    labels = probabilities_to_labels(probs, ids)
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 3, 7, 200}
    assert probabilities_to_labels(probs, ids, dtype=np.uint16).dtype == np.uint16


def test_area_threshold_is_the_probability_that_covers_the_target_area() -> None:
    probs = ramp_probs()
    (t,) = area_thresholds(probs, np.array([30.0]))
    assert t == pytest.approx(0.71)  # the 30th largest of 0.01..1.00
    labels = probabilities_to_labels(probs, [1], threshold=[t])
    assert np.count_nonzero(labels) == 29  # strictly above: the 30th pixel ties with the background scale
    assert area_thresholds(probs, np.array([3.0])) == [AREA_THRESHOLD_MAX]  # a confident object is not cut down
    assert area_thresholds(probs, np.array([95.0])) == [AREA_THRESHOLD_MIN]  # nor a weak one forced to grow
    assert area_thresholds(probs, np.array([0.0])) == [0.5]  # an object absent from its support


def test_target_area_is_blended_between_two_supports_and_held_outside() -> None:
    a = np.zeros((8, 8), np.uint8)
    a[:2, :5] = 1  # object 1: 10 px
    b = a.copy()
    b[:6, :5] = 1  # object 1: 30 px
    b[7, :4] = 2  # object 2 only in the second support
    areas = support_areas({0: a, 10: b}, [1, 2])
    np.testing.assert_array_equal(areas[0], [10, 0])
    np.testing.assert_allclose(target_areas(5, areas), [20, 2])
    np.testing.assert_allclose(target_areas(8, areas), [26, 3.2])
    np.testing.assert_allclose(target_areas(12, areas), [30, 4])
    np.testing.assert_allclose(target_areas(0, areas), [10, 0])


def test_per_object_thresholds_match_one_threshold_and_move_each_object_alone() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(16, 16)).transpose(2, 0, 1).astype(np.float32)
    for t in (0.3, 0.5, 0.7):
        np.testing.assert_array_equal(probabilities_to_labels(probs, [3, 7], threshold=[t, t]),
                                      probabilities_to_labels(probs, [3, 7], threshold=t))
    base = probabilities_to_labels(probs, [3, 7], threshold=[0.5, 0.5])
    lowered = probabilities_to_labels(probs, [3, 7], threshold=[0.2, 0.5])
    assert np.count_nonzero(lowered == 3) > np.count_nonzero(base == 3)
    assert np.all(lowered[base == 3] == 3)  # lowering one object's threshold only grows that object
    with pytest.raises(ValueError, match="2 thresholds for 1 objects"):
        probabilities_to_labels(probs[:2], [3], threshold=[0.5, 0.5])


def test_decision_object_applies_its_rule() -> None:
    probs = ramp_probs()
    support = np.zeros((10, 10), np.uint8)
    support.flat[:40] = 1  # 40 px painted
    fixed = Decision("threshold", 0.35, {0: support}, [1])
    assert fixed.areas is None and fixed.thresholds(3, probs) == 0.35
    assert np.count_nonzero(fixed(3, probs)) == 65  # p > 0.35: 0.36 .. 1.00
    prior = Decision("area-prior", 0.35, {0: support}, [1])
    assert prior.thresholds(3, probs) == [pytest.approx(0.61)]  # the 40th largest probability
    assert np.count_nonzero(prior(3, probs)) == 39
    # the prior does not read the threshold at all
    np.testing.assert_array_equal(Decision("area-prior", 0.9, {0: support}, [1])(3, probs), prior(3, probs))
    with pytest.raises(ValueError, match="unknown decision rule 'maybe'"):
        Decision("maybe", 0.5, {0: support}, [1])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Decision("threshold", 1.0, {0: support}, [1])


# --- the decision in real runs of the shipped model -----------------------------------------------------


@pytest.fixture(scope="module")
def cine():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow inside the generator's exp()
        return generate_cine(seed=21, num_frames=5, size=160)


def shipped_run(cine, **changes) -> np.ndarray:
    from XRayVOSLib.inference.propagator import Propagator

    settings = RunSettings.from_model(None, device="cpu", **changes)
    return Propagator.load(None, settings, accelerate=False).propagate(cine.frames, {0: cine.labels[0]})


@pytest.mark.usefixtures("torch_one_thread")
def test_fixed_threshold_areas_are_monotone_and_the_area_prior_ignores_the_threshold(cine) -> None:
    ids = [int(i) for i in np.unique(cine.labels[0]) if i]
    low = shipped_run(cine, decision="threshold", threshold=0.3)
    high = shipped_run(cine, decision="threshold", threshold=0.7)
    for t in range(1, 5):
        for i in ids:
            assert np.all(low[t][high[t] == i] == i), (t, i)  # a higher threshold only removes pixels
    assert np.count_nonzero(low[1:]) > np.count_nonzero(high[1:])
    prior_a = shipped_run(cine, decision="area-prior", threshold=0.3)
    prior_b = shipped_run(cine, decision="area-prior", threshold=0.7)
    np.testing.assert_array_equal(prior_a, prior_b)
    assert not np.array_equal(prior_a, low) and not np.array_equal(prior_a, high)


@pytest.mark.usefixtures("torch_one_thread")
def test_area_prior_keeps_each_object_near_its_support_area(cine) -> None:
    supports = {0: cine.labels[0]}
    ids = [int(i) for i in np.unique(cine.labels[0]) if i]
    target = support_areas(supports, ids)[0]
    errors = {}
    for decision in ("threshold", "area-prior"):
        labels = shipped_run(cine, decision=decision, threshold=0.5, temporal_blend=0.0)
        np.testing.assert_array_equal(labels[0], cine.labels[0])  # the support is returned as given
        areas = np.array([[np.count_nonzero(labels[t] == i) for i in ids] for t in range(1, 5)])
        errors[decision] = np.abs(areas - target).mean()
    assert errors["area-prior"] < errors["threshold"]
