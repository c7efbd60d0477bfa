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
    mine = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my support")
    vessel = mine.GetSegmentation().AddEmptySegment("vessel", "vessel", [0.9, 0.1, 0.1])
    sequence = logic.support_sequence(browser, mine)
    segmentation = browser.GetProxyNode(sequence)  # a new node: the user's own is copied, never made the proxy
    assert segmentation is not mine and not browser.IsProxyNodeID(mine.GetID())
    assert S.segment_ids(segmentation) == [vessel]
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


def _segmentation_nodes(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")


def test_an_existing_segmentation_is_copied_into_a_support_never_converted(logic, synthetic_cine, add_cine):
    """Choosing a segmentation the user already has copies it into the frame shown; the original stays as it is."""
    from xrayvos_slicer import segments as S
    from xrayvos_slicer.sequences import browsers

    cine = synthetic_cine
    browser = add_cine(cine)
    volume_sequence = browser.GetMasterSequenceNode()
    browser.SetSelectedItemNumber(5)
    frame5 = volume_sequence.GetNthDataNode(5)
    mine = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn earlier")
    mine.SetReferenceImageGeometryParameterFromVolumeNode(browser.GetProxyNode(volume_sequence))
    for value, name in sorted(cine.object_names.items()):
        segment_id = mine.GetSegmentation().AddEmptySegment(name.replace(" ", "_"), name, [0.2 * value, 0.5, 0.5])
        S.set_segment_mask(mine, segment_id, cine.labels[5] == value, frame5)
    ids = S.segment_ids(mine)
    drawn = S.labelmap(mine, frame5, ids)
    np.testing.assert_array_equal(drawn, cine.labels[5])
    assert logic.existing_support(browser, mine) is None  # the widget asks before copying such a one
    nodes = _segmentation_nodes(logic.scene)

    sequence = logic.support_sequence(browser, mine)
    proxy = browser.GetProxyNode(sequence)
    assert proxy is not mine and not any(b.IsProxyNodeID(mine.GetID()) for b in browsers(logic.scene))
    assert logic.support_frames(browser, proxy) == [5]
    labels, names = logic.label_arrays(browser, proxy)
    np.testing.assert_array_equal(labels[5], drawn)
    assert names == [cine.object_names[k] for k in sorted(cine.object_names)] and not labels[6:].any()

    # Browsing the cine and painting the support leave the original exactly as drawn.
    for t in (0, 11, 5):
        browser.SetSelectedItemNumber(t)
    logic.set_support(browser, 9, cine.labels[9], support=proxy, names=dict(cine.object_names))
    np.testing.assert_array_equal(S.labelmap(mine, frame5, ids), drawn)
    assert S.segment_ids(mine) == ids
    assert logic.support_frames(browser, proxy) == [5, 9]
    # Choosing it again finds that copy: nothing is copied twice.
    assert logic.support_sequence(browser, mine) is sequence and logic.existing_support(browser, mine) is sequence
    assert _segmentation_nodes(logic.scene) == nodes + 1


def test_a_paint_stroke_rereads_only_the_frame_shown(logic, synthetic_cine, painted, monkeypatch):
    from xrayvos_slicer import segments as S
    from xrayvos_slicer import supports

    cine = synthetic_cine
    browser, support = painted(cine, frames=(0, 11))
    sequence = logic.support_sequence(browser, support)
    painted_frames = supports.PaintedFrames(browser, sequence)
    assert painted_frames.frames() == [0, 11]
    reads = []
    is_empty = S.is_empty
    monkeypatch.setattr(S, "is_empty", lambda node, volume: reads.append(node) or is_empty(node, volume))

    volume_sequence = browser.GetMasterSequenceNode()
    frame_shown = browser.GetProxyNode(volume_sequence)
    browser.SetSelectedItemNumber(6)
    S.set_segment_mask(support, S.segment_ids(support)[0], cine.labels[6] == 1, frame_shown)  # a stroke at frame 6
    assert painted_frames.update_current() == [0, 6, 11]
    assert len(reads) == 1  # one merged label map, not one per frame
    browser.SetSelectedItemNumber(11)
    for segment_id in S.segment_ids(support):  # erase frame 11
        S.set_segment_mask(support, segment_id, np.zeros(cine.labels[11].shape, bool), frame_shown)
    assert painted_frames.update_current() == [0, 6]
    assert len(reads) == 2
    monkeypatch.setattr(S, "is_empty", is_empty)
    assert supports.support_frames(browser, sequence) == [0, 6]  # what reading every frame finds
