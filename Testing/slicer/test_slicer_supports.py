"""The support segmentation sequence: painting at a browser index is recorded for that frame only."""

from __future__ import annotations

import numpy as np
import pytest

from XRayVOSLib.settings import RunSettings

# fixtures from conftest.py: mrml, logic, synthetic_cine

pytestmark = pytest.mark.slicer


def test_painting_the_proxy_records_each_frame(logic, synthetic_cine, add_cine):
    """What the Segment Editor does: write into the proxy segmentation while the browser shows frame t."""
    from xrayvos_slicer import segments as S

    cine = synthetic_cine
    browser = add_cine(cine)
    volume_sequence = browser.GetMasterSequenceNode()
    segmentation = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my support")
    vessel = segmentation.GetSegmentation().AddEmptySegment("vessel", "vessel", [0.9, 0.1, 0.1])
    sequence = logic.support_sequence(browser, segmentation)
    assert browser.GetProxyNode(sequence) is segmentation  # the user's own node is the proxy
    assert sequence.GetNumberOfDataNodes() == volume_sequence.GetNumberOfDataNodes()
    assert logic.support_frames(browser, segmentation) == []

    masks = {2: cine.labels[2] == 1, 9: cine.labels[9] == 1}
    for t, mask in masks.items():
        browser.SetSelectedItemNumber(t)
        S.set_segment_mask(segmentation, vessel, mask, browser.GetProxyNode(volume_sequence))
    browser.SetSelectedItemNumber(5)
    assert not S.labelmap(segmentation, browser.GetProxyNode(volume_sequence), [vessel]).any()  # frame 5: empty

    assert logic.support_frames(browser, segmentation) == [2, 9]
    for t in range(sequence.GetNumberOfDataNodes()):
        item = sequence.GetNthDataNode(t)
        assert S.segment_ids(item) == [vessel]  # every frame lists the segment
        labels = S.labelmap(item, volume_sequence.GetNthDataNode(t), [vessel])
        np.testing.assert_array_equal(labels, masks.get(t, np.zeros_like(labels)).astype(np.uint8))

    # A segment added at another frame (Segment Editor "Add") reaches every frame once synced.
    browser.SetSelectedItemNumber(7)
    segmentation.GetSegmentation().AddEmptySegment("wire", "wire", [0.1, 0.9, 0.1])
    logic.sync_support_segments(browser, segmentation)
    for t in range(sequence.GetNumberOfDataNodes()):
        assert S.segment_ids(sequence.GetNthDataNode(t)) == [vessel, "wire"]
    browser.SetSelectedItemNumber(2)
    assert S.segment_ids(segmentation) == [vessel, "wire"]
    assert logic.support_frames(browser, segmentation) == [2, 9]

    # A segment deleted at the frame shown (Segment Editor "Remove") is deleted from every frame and stays
    # deleted through frame changes and later syncs, while the other segment keeps its painting.
    browser.SetSelectedItemNumber(4)
    segmentation.GetSegmentation().RemoveSegment("wire")
    logic.sync_support_segments(browser, segmentation)
    for t in (9, 0, 4):
        browser.SetSelectedItemNumber(t)
        logic.sync_support_segments(browser, segmentation)
        assert S.segment_ids(segmentation) == [vessel]
    assert all(S.segment_ids(sequence.GetNthDataNode(t)) == [vessel] for t in range(sequence.GetNumberOfDataNodes()))
    assert logic.support_frames(browser, segmentation) == [2, 9]
    # Deleting the painted segment at a frame where it is empty still deletes its painting everywhere.
    segmentation.GetSegmentation().RemoveSegment(vessel)
    logic.sync_support_segments(browser, segmentation)
    assert logic.support_frames(browser, segmentation) == []


def test_set_support_from_numpy_keeps_names_colours_and_clears(logic, synthetic_cine, painted):
    from xrayvos_slicer import segments as S

    cine = synthetic_cine
    browser, support = painted(cine, frames=(0, 11))
    names = [cine.object_names[k] for k in sorted(cine.object_names)]
    assert [info.name for info in S.segment_infos(support)] == names
    assert logic.support_frames(browser, support) == [0, 11]
    labels, label_names = logic.label_arrays(browser, support)
    assert label_names == names
    np.testing.assert_array_equal(labels[0], cine.labels[0])
    np.testing.assert_array_equal(labels[11], cine.labels[11])
    assert not labels[1:11].any()

    from xrayvos_slicer import supports

    supports.clear_frame(browser, logic.support_sequence(browser, support), 11)
    assert logic.support_frames(browser, support) == [0]


def test_result_or_foreign_segmentations_are_refused_as_support(logic, synthetic_cine, painted, add_cine):
    cine = synthetic_cine
    browser, support = painted(cine, frames=(0,))
    other = add_cine(cine, "another cine")
    with pytest.raises(ValueError, match="already synchronised"):
        logic.support_sequence(other, support)
    with pytest.raises(ValueError, match="no support frame"):
        empty = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
        logic.start(browser, empty, RunSettings(method="flow"))
