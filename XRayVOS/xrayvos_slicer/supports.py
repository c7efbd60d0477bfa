"""The support segmentation: a segmentation sequence synchronised with the cine's browser.

The user's segmentation node becomes the browser's proxy for a sequence with one item per cine frame
(same index values) and "save changes" on, so whatever the Segment Editor paints at the current frame
is recorded into that frame's item. Every item carries the same segments (empty where not painted), so
the segment list does not change while scrolling through the cine. Support frames = frames where at
least one segment is not empty.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import slicer

from . import segments as S
from .sequences import CINE_REFERENCE, ROLE_ATTRIBUTE, browsers, frame_index, new_sequence_like

ROLE = "support"
SEGMENTS_ATTRIBUTE = "XRayVOS.SegmentIDs"  # JSON list: IDs may hold commas and spaces


def find_support_sequence(browser: "slicer.vtkMRMLSequenceBrowserNode",
                          segmentation: "slicer.vtkMRMLSegmentationNode") -> "slicer.vtkMRMLSequenceNode | None":
    sequence = browser.GetSequenceNode(segmentation) if browser.IsProxyNodeID(segmentation.GetID()) else None
    return sequence if sequence is not None and sequence.GetAttribute(ROLE_ATTRIBUTE) != "result" else None


def ensure_support_sequence(scene: "slicer.vtkMRMLScene", browser: "slicer.vtkMRMLSequenceBrowserNode",
                            segmentation: "slicer.vtkMRMLSegmentationNode") -> "slicer.vtkMRMLSequenceNode":
    """The support sequence whose proxy is `segmentation`, created (and synchronised) on first use.

    What the segmentation holds now is kept as the current frame's item; the other frames start empty
    with the same segments.
    """
    if segmentation.GetAttribute(ROLE_ATTRIBUTE) == "result":
        raise ValueError(f"{segmentation.GetName()!r} is an XRayVOS result; choose the support segmentation")
    existing = find_support_sequence(browser, segmentation)
    if existing is not None:
        browser.SetSaveChanges(existing, True)
        return existing
    for other in browsers_using(scene, segmentation):
        if other is not browser:
            raise ValueError(f"{segmentation.GetName()!r} is already synchronised with browser {other.GetName()!r}")
    cine = browser.GetMasterSequenceNode()
    current = max(browser.GetSelectedItemNumber(), 0)
    proxy_volume = browser.GetProxyNode(cine)
    if proxy_volume is not None:
        S.set_reference_geometry(segmentation, proxy_volume)
    infos = S.segment_infos(segmentation)
    sequence = new_sequence_like(cine, scene.GenerateUniqueName(f"{segmentation.GetName()} sequence"))
    sequence.SetAttribute(ROLE_ATTRIBUTE, ROLE)
    for t in range(cine.GetNumberOfDataNodes()):
        if t == current:
            item = S.copy_segmentation(segmentation)
        else:
            item = slicer.vtkMRMLSegmentationNode()
            item.GetSegmentation().SetSourceRepresentationName(S.BINARY)
            for info in infos:
                S.add_segment(item, info)
        S.set_reference_geometry(item, cine.GetNthDataNode(t))
        sequence.SetDataNodeAtValue(item, cine.GetNthIndexValue(t))
    scene.AddNode(sequence)
    sequence.SetNodeReferenceID(CINE_REFERENCE, cine.GetID())
    if sequence.GetStorageNode() is None:
        sequence.AddDefaultStorageNode()
    browser.AddSynchronizedSequenceNode(sequence)
    browser.AddProxyNode(segmentation, sequence, False)  # the user's node itself becomes the proxy
    browser.SetSaveChanges(sequence, True)
    if segmentation.GetDisplayNode() is None:
        segmentation.CreateDefaultDisplayNodes()
    return sequence


def browsers_using(scene: "slicer.vtkMRMLScene", node) -> list["slicer.vtkMRMLSequenceBrowserNode"]:
    return [b for b in browsers(scene) if b.IsProxyNodeID(node.GetID())]


def items(sequence: "slicer.vtkMRMLSequenceNode") -> list["slicer.vtkMRMLSegmentationNode"]:
    return [sequence.GetNthDataNode(i) for i in range(sequence.GetNumberOfDataNodes())]


def sync_segments(browser: "slicer.vtkMRMLSequenceBrowserNode",
                  sequence: "slicer.vtkMRMLSequenceNode") -> list[S.SegmentInfo]:
    """Make every item (and the proxy) carry the same segments; return them in label order.

    Segments are global across frames: one added at any frame is added to all, and one the user deleted
    (in the proxy, i.e. at the frame shown) is deleted from all. The segment IDs after the last sync are
    kept in the sequence's SEGMENTS_ATTRIBUTE to tell a deletion from a segment not yet synced.
    """
    proxy = browser.GetProxyNode(sequence)
    known = json.loads(sequence.GetAttribute(SEGMENTS_ATTRIBUTE) or "[]")
    deleted = set(known) - set(S.segment_ids(proxy)) if proxy is not None and known else set()
    groups = ([S.segment_infos(proxy)] if proxy is not None else []) + [S.segment_infos(i) for i in items(sequence)]
    infos = [info for info in S.merge_infos(groups) if info.segment_id not in deleted]
    for node in ([proxy] if proxy is not None else []) + items(sequence):  # the proxy first: "save changes"
        for segment_id in deleted:                                          # records it into the current item
            if node.GetSegmentation().GetSegment(segment_id) is not None:
                node.GetSegmentation().RemoveSegment(segment_id)
        for info in infos:
            S.add_segment(node, info)
    sequence.SetAttribute(SEGMENTS_ATTRIBUTE, json.dumps([info.segment_id for info in infos]))
    return infos


def support_labelmaps(cine: "slicer.vtkMRMLSequenceNode", sequence: "slicer.vtkMRMLSequenceNode",
                      infos: Sequence[S.SegmentInfo]) -> dict[int, np.ndarray]:
    """{cine frame index: uint8 [H, W] label map} for every frame with a non-empty segment."""
    ids = [info.segment_id for info in infos]
    supports: dict[int, np.ndarray] = {}
    for item_number, item in enumerate(items(sequence)):
        t = frame_index(cine, sequence, item_number)
        if t < 0:
            continue  # an item at an index value the cine lacks: cannot be a support
        labels = S.labelmap(item, cine.GetNthDataNode(t), ids)
        if labels.any():
            supports[t] = labels
    return supports


def support_frames(browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode") -> list[int]:
    cine = browser.GetMasterSequenceNode()
    out = []
    for item_number, item in enumerate(items(sequence)):
        t = frame_index(cine, sequence, item_number)
        if t >= 0 and not S.is_empty(item, cine.GetNthDataNode(t)):
            out.append(t)
    return sorted(out)


def paint_frame(browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode", frame: int,
                labels: np.ndarray, names: dict[int, str] | None = None,
                colors: dict[int, Sequence[float]] | None = None) -> list[str]:
    """Write a label map [H, W] (0 = background, k = object k) into frame `frame`, through the proxy.

    Object k goes to the segment named names[k] (default "Object k"), created if needed; segments with no
    label in `labels` are cleared at this frame. Returns the segment IDs by label value order.
    """
    cine = browser.GetMasterSequenceNode()
    labels = np.asarray(labels)
    if not 0 <= frame < cine.GetNumberOfDataNodes():
        raise ValueError(f"frame {frame} out of range for a cine of {cine.GetNumberOfDataNodes()} frames")
    browser.SetSelectedItemNumber(frame)
    proxy = browser.GetProxyNode(sequence)
    volume = browser.GetProxyNode(cine)
    segmentation = proxy.GetSegmentation()
    written: list[str] = []
    for value in sorted(int(v) for v in np.unique(labels) if v != 0):
        name = (names or {}).get(value, f"Object {value}")
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        if not segment_id:
            info = S.new_info(segmentation.GenerateUniqueSegmentID(name.replace(" ", "_")), name,
                              (colors or {}).get(value), value - 1)
            S.add_segment(proxy, info)
            segment_id = info.segment_id
        S.set_segment_mask(proxy, segment_id, labels == value, volume)
        written.append(segment_id)
    for segment_id in S.segment_ids(proxy):
        if segment_id not in written:
            S.set_segment_mask(proxy, segment_id, np.zeros(labels.shape, bool), volume)
    sync_segments(browser, sequence)
    return written


def clear_frame(browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode",
                frame: int) -> None:
    """Empty every segment at one frame (it stops being a support frame)."""
    volume_shape = browser.GetMasterSequenceNode().GetNthDataNode(frame).GetImageData().GetDimensions()
    paint_frame(browser, sequence, frame, np.zeros((volume_shape[1], volume_shape[0]), np.uint8))
