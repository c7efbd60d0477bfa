"""Area prior (inference/area_prior.py): per-object thresholds that keep each object's support area, their
interpolation between two supports, per-object decisions in merge.probabilities_to_labels, and the engine
applying them to a trained model's real forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from XRayVOSLib.inference.area_prior import (
    AREA_THRESHOLD_MAX,
    AREA_THRESHOLD_MIN,
    area_thresholds,
    support_areas,
    target_areas,
)
from XRayVOSLib.inference.merge import probabilities_to_labels
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.synth import generate_cine

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def ramp_probs() -> np.ndarray:
    """One object whose probability is 0.01, 0.02, ..., 1.00 over a 10x10 frame."""
    obj = (np.arange(1, 101, dtype=np.float32) / 100).reshape(10, 10)
    return np.stack([1 - obj, obj])


def test_threshold_is_the_probability_that_covers_the_target_area() -> None:
    probs = ramp_probs()
    (t,) = area_thresholds(probs, np.array([30.0]))
    assert t == pytest.approx(0.71)  # the 30th largest of 0.01..1.00
    labels = probabilities_to_labels(probs, [1], object_threshold=[t])
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
        np.testing.assert_array_equal(probabilities_to_labels(probs, [3, 7], object_threshold=[t, t]),
                                      probabilities_to_labels(probs, [3, 7], object_threshold=t))
    base = probabilities_to_labels(probs, [3, 7], object_threshold=[0.5, 0.5])
    lowered = probabilities_to_labels(probs, [3, 7], object_threshold=[0.2, 0.5])
    assert np.count_nonzero(lowered == 3) > np.count_nonzero(base == 3)
    assert np.all(lowered[base == 3] == 3)  # lowering one object's threshold only grows that object
    with pytest.raises(ValueError, match="2 thresholds for 1 objects"):
        probabilities_to_labels(probs[:2], [3], object_threshold=[0.5, 0.5])


def test_engine_keeps_each_object_near_its_support_area_with_the_shipped_model() -> None:
    cine = generate_cine(seed=21, num_frames=5, size=160)
    supports = {0: cine.labels[0]}
    ids = [int(i) for i in np.unique(cine.labels[0]) if i]
    target = support_areas(supports, ids)[0]
    errors = {}
    for prior in (False, True):
        prop = Propagator.load(device="cpu", accelerate=False, area_prior=prior, temporal_blend=0.0)
        assert prop.settings.area_prior is prior
        labels = prop.propagate(cine.frames, supports)
        np.testing.assert_array_equal(labels[0], cine.labels[0])  # the support is returned as given
        areas = np.array([[np.count_nonzero(labels[t] == i) for i in ids] for t in range(1, 5)])
        errors[prior] = np.abs(areas - target).mean()
    assert errors[True] < errors[False]
