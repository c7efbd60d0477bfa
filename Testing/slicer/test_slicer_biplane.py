"""Biplane XA: one browser, two cines (plane A the master), as Slicer's DICOM image-sequence plugin loads
a biplane run. Plane B's supports, results and frame numbers follow plane B, never the master."""

from __future__ import annotations

import numpy as np
import pytest

from XRayVOSLib.settings import RunSettings

pytestmark = pytest.mark.slicer

OFFSET = 2  # plane B's frame t is at plane A's frame t + 2 (B starts later), and B outlasts A by one frame
B_FRAMES = 11
B_SPACING = (0.3, 0.4)


@pytest.fixture
def biplane(logic):
    from XRayVOSLib.synth import generate_cine
    from xrayvos_slicer import sequences

    a = generate_cine(seed=3, num_frames=12, size=128)
    b = generate_cine(seed=5, num_frames=B_FRAMES, size=96)
    browser = logic.add_cine(a.frames, np.arange(12) * a.frame_time, a.spacing, "plane A")
    plane_a = browser.GetMasterSequenceNode()
    # Plane B as DICOMImageSequencePlugin.addSequenceBrowserNode adds it: one more synchronised volume sequence.
    plane_b = sequences.new_sequence_like(plane_a, "plane B")
    ijk_to_ras = sequences.frame_ijk_to_ras(B_SPACING)
    for t in range(B_FRAMES):
        value = f"{(t + OFFSET) * a.frame_time:.3f}"
        plane_b.SetDataNodeAtValue(sequences.frame_volume(b.frames[t], ijk_to_ras), value)
    logic.scene.AddNode(plane_b)
    browser.AddSynchronizedSequenceNode(plane_b)
    return browser, plane_a, plane_b, a, b


def test_plane_b_support_and_result_have_plane_b_frames_and_geometry(logic, biplane):
    from xrayvos_slicer import segments as S
    from xrayvos_slicer import training_cases
    from xrayvos_slicer.sequences import CINE_REFERENCE, non_cine_sequence_ids

    browser, plane_a, plane_b, a, b = biplane
    assert logic.resolve_cine(plane_b) == (browser, plane_b)
    names = dict(b.object_names)
    support = logic.set_support(plane_b, 4, b.labels[4], names=names)  # a 96 x 96 label map, in plane B's grid
    assert browser.GetSelectedItemNumber() == 4 + OFFSET  # the master frame at plane B's frame 4
    support_sequence = logic.support_sequence(plane_b, support)
    assert support_sequence.GetNodeReference(CINE_REFERENCE) is plane_b
    assert [support_sequence.GetNthIndexValue(i) for i in range(support_sequence.GetNumberOfDataNodes())] == [
        plane_b.GetNthIndexValue(t) for t in range(B_FRAMES)]
    assert logic.support_frames(plane_b, support) == [4]
    item = support_sequence.GetNthDataNode(4)
    np.testing.assert_array_equal(S.labelmap(item, plane_b.GetNthDataNode(4), S.segment_ids(item)), b.labels[4])

    result = logic.propagate(plane_b, support, RunSettings(method="copy"), timeout=120)  # the real worker
    assert result.GetNodeReference(CINE_REFERENCE) is plane_b
    assert result.GetNumberOfDataNodes() == B_FRAMES
    labels, label_names = logic.label_arrays(plane_b, result)
    assert labels.shape == (B_FRAMES, 96, 96) and label_names == [names[k] for k in sorted(names)]
    for t in range(B_FRAMES):  # "copy" repeats the one support everywhere
        np.testing.assert_array_equal(labels[t], b.labels[4])

    # Plane A keeps its own support and result, side by side.
    support_a = logic.set_support(browser, 0, a.labels[0], names=dict(a.object_names))
    result_a = logic.propagate(browser, support_a, RunSettings(method="copy"), timeout=120)
    assert result_a.GetNumberOfDataNodes() == 12 and logic.label_arrays(browser, result_a)[0].shape == (12, 128, 128)
    assert logic.result_sequence(plane_b, support) is result and logic.result_sequence(browser, support_a) is result_a
    with pytest.raises(ValueError, match="support of cine 'plane B'"):
        logic.support_sequence(browser, support)  # plane B's support is not plane A's
    case = training_cases.collect_case(browser, support_sequence)
    assert case.frames.shape == (B_FRAMES, 96, 96) and case.labelled_frames == [4]

    hidden = set(non_cine_sequence_ids(logic.scene))  # what the cine selector leaves out
    assert {support_sequence.GetID(), result.GetID(), result_a.GetID()} <= hidden
    assert not {plane_a.GetID(), plane_b.GetID()} & hidden


def test_plane_b_frame_numbers_go_through_the_master(logic, biplane):
    browser, plane_a, plane_b, a, b = biplane
    logic.show_frame(plane_b, 3)
    assert browser.GetSelectedItemNumber() == 3 + OFFSET
    assert logic.current_frame(plane_b) == 3 and logic.current_frame(browser) == 3 + OFFSET
    browser.SetSelectedItemNumber(1)  # before plane B starts
    assert logic.current_frame(plane_b) == -1
    support = logic.set_support(plane_b, 0, b.labels[0], names=dict(b.object_names))
    browser.SetSelectedItemNumber(0)
    with pytest.raises(ValueError, match="shows no frame of 'plane B'"):
        logic.use_frame_as_support(plane_b, support)
    with pytest.raises(ValueError, match="cannot show it"):  # B's last frame is later than A's last
        logic.set_support(plane_b, B_FRAMES - 1, b.labels[B_FRAMES - 1], support=support)
    # Browsing the master over frames plane B lacks adds nothing plane B would count as a frame.
    for item in range(12):
        browser.SetSelectedItemNumber(item)
    assert logic.support_frames(plane_b, support) == [0]
    labels, _ = logic.label_arrays(plane_b, support)
    assert labels.shape == (B_FRAMES, 96, 96)
    np.testing.assert_array_equal(labels[0], b.labels[0])
    assert not labels[1:].any()
