"""The pass plan (propagation/plan.py) and the one merge (propagation/merge.py): which passes reach a frame, how
much each counts, and the one tie rule: at the midpoint between two supports the earlier support wins."""

from __future__ import annotations

import numpy as np
import pytest

from XRayVOSLib.propagation.decision import probabilities_to_labels
from XRayVOSLib.propagation.merge import FrameMerger, labels_to_onehot
from XRayVOSLib.propagation.plan import Pass, plan_passes, support_weight, visits


def test_plan_covers_every_frame_from_the_nearest_supports() -> None:
    assert plan_passes(10, [6, 2]) == [
        Pass(2, (1, 0)), Pass(2, (3, 4, 5)), Pass(6, (5, 4, 3)), Pass(6, (7, 8, 9))]
    assert plan_passes(3, [0, 1, 2]) == []
    assert plan_passes(4, [0]) == [Pass(0, (1, 2, 3))]
    assert plan_passes(4, [3, 3]) == [Pass(3, (2, 1, 0))]
    # three supports: a frame uses at most the two that bracket it
    assert plan_passes(9, [0, 4, 8]) == [Pass(0, (1, 2, 3)), Pass(4, (3, 2, 1)), Pass(4, (5, 6, 7)),
                                         Pass(8, (7, 6, 5))]
    assert visits(10, plan_passes(10, [2, 6])).tolist() == [1, 1, 0, 2, 2, 2, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="at least one support"):
        plan_passes(5, [])


def test_support_weight_is_linear_in_the_distance_to_each_support() -> None:
    assert [support_weight(t, 2, [2, 6]) for t in (3, 4, 5)] == [0.75, 0.5, 0.25]
    assert [support_weight(t, 6, [2, 6]) for t in (3, 4, 5)] == [0.25, 0.5, 0.75]
    assert support_weight(0, 2, [2, 6]) == support_weight(9, 6, [2, 6]) == 1.0
    assert support_weight(5, 0, [0, 4, 8]) == 0.0  # a support that does not bracket the frame


def test_labels_to_onehot_puts_background_first_and_every_other_id_in_it() -> None:
    labels = np.array([[0, 3], [7, 5]], np.uint8)
    onehot = labels_to_onehot(labels, [3, 7])
    assert onehot.dtype == np.float32 and onehot.shape == (3, 2, 2)
    assert onehot[0].tolist() == [[1, 0], [0, 1]]  # id 5 is not an object of this run: background
    assert onehot[1].tolist() == [[0, 1], [0, 0]] and onehot[2].tolist() == [[0, 0], [1, 0]]
    np.testing.assert_array_equal(onehot.sum(0), 1.0)


def disagreeing_supports() -> tuple[np.ndarray, np.ndarray]:
    """Two label maps that disagree in every way a tie can go: object vs background both ways, and object 2
    (earlier) vs object 1 (later), where a plain arg-max tie would pick the lower channel, object 1."""
    early, late = np.zeros((6, 6), np.uint8), np.zeros((6, 6), np.uint8)
    early[0, :3] = 1  # early: object 1, late: background
    late[1, :3] = 2  # early: background, late: object 2
    early[2, :3], late[2, :3] = 2, 1  # both objects, swapped
    early[3, :3] = late[3, :3] = 1  # agreement
    return early, late


def merged_labels(t: int, early: np.ndarray, late: np.ndarray, order: tuple[int, int] = (2, 6)) -> np.ndarray:
    """Frame t between supports 2 and 6: each pass votes its support's one-hot mask, in the given order."""
    ids = [1, 2]
    merger = FrameMerger(10, plan_passes(10, [2, 6]), [2, 6])
    votes = {2: labels_to_onehot(early, ids), 6: labels_to_onehot(late, ids)}
    assert merger.add(t, order[0], votes[order[0]]) is None  # waits for the second pass
    merged = merger.add(t, order[1], votes[order[1]])
    assert merged is not None and merged.dtype == np.float32
    np.testing.assert_allclose(merged.sum(0), 1.0, atol=1 / 255)
    return probabilities_to_labels(merged, ids)


def test_midpoint_tie_goes_to_the_earlier_support_and_off_it_the_nearer_one_wins() -> None:
    early, late = disagreeing_supports()
    np.testing.assert_array_equal(merged_labels(4, early, late), early)  # the midpoint
    np.testing.assert_array_equal(merged_labels(3, early, late), early)  # nearer frame 2
    np.testing.assert_array_equal(merged_labels(5, early, late), late)  # nearer frame 6
    # The tie goes to the pass that ran first (the plan runs the earlier support's pass first): the rule
    # is in the merge, not in the order of the channels.
    np.testing.assert_array_equal(merged_labels(4, early, late, order=(6, 2)), late)


def test_merged_probabilities_are_the_weighted_sum_and_single_passes_are_exact() -> None:
    rng = np.random.default_rng(1)
    a, b = (rng.dirichlet([1, 1, 1], size=(5, 7)).transpose(2, 0, 1).astype(np.float32) for _ in range(2))
    merger = FrameMerger(10, plan_passes(10, [2, 6]), [2, 6])
    assert merger.add(3, 2, a) is None
    np.testing.assert_allclose(merger.add(3, 6, b), 0.75 * a + 0.25 * b, atol=0.5 / 255 + 1e-6)
    assert not merger.pending  # nothing kept once a frame is released
    np.testing.assert_array_equal(merger.add(8, 6, a), a)  # outside the supports' span: one pass, weight 1
    np.testing.assert_array_equal(merger.add(0, 2, b), b)
