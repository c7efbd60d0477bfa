"""The support segmentation: a segmentation sequence synchronised with the cine's browser.

A new segmentation node is the browser's proxy for a sequence with one item per cine frame (the cine's
index values) and "save changes" on, so whatever the Segment Editor paints at the current frame is
recorded into that frame's item. Every item carries the same segments (empty where not painted), so
the segment list does not change while scrolling through the cine. Support frames = frames where at
least one segment is not empty.

A segmentation the user already has is never turned into the proxy itself (it would then show only
the current frame's item, and its content would be gone from view at every other frame): its segments
are copied into the current frame of a new support sequence and the original is left as it is.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import slicer

from . import segments as S
from .sequences import (CINE_REFERENCE, ROLE_ATTRIBUTE, SOURCE_REFERENCE, browsers, cine_of, current_frame,
                        frame_index, new_sequence_like, show_frame, synchronise_own_frames_only,
                        synchronized_sequences)

ROLE = "support"
SEGMENTS_ATTRIBUTE = "XRayVOS.SegmentIDs"  # JSON list: IDs may hold commas and spaces


def find_support_sequence(browser: "slicer.vtkMRMLSequenceBrowserNode",
                          segmentation: "slicer.vtkMRMLSegmentationNode") -> "slicer.vtkMRMLSequenceNode | None":
    """The support sequence whose proxy is `segmentation` in this browser."""
    sequence = browser.GetSequenceNode(segmentation) if browser.IsProxyNodeID(segmentation.GetID()) else None
    return sequence if sequence is not None and sequence.GetAttribute(ROLE_ATTRIBUTE) == ROLE else None


def find_copy(browser: "slicer.vtkMRMLSequenceBrowserNode", cine: "slicer.vtkMRMLSequenceNode",
              segmentation: "slicer.vtkMRMLSegmentationNode") -> "slicer.vtkMRMLSequenceNode | None":
    """The support sequence of `cine` that `segmentation` was copied into earlier (so it is copied once)."""
    for sequence in synchronized_sequences(browser):
        source = sequence.GetNodeReference(SOURCE_REFERENCE)
        if (sequence.GetAttribute(ROLE_ATTRIBUTE) == ROLE and source is not None
                and source.GetID() == segmentation.GetID() and cine_of(browser, sequence).GetID() == cine.GetID()):
            return sequence
    return None


def ensure_support_sequence(scene: "slicer.vtkMRMLScene", browser: "slicer.vtkMRMLSequenceBrowserNode",
                            cine: "slicer.vtkMRMLSequenceNode", segmentation: "slicer.vtkMRMLSegmentationNode | None"
                            = None) -> "slicer.vtkMRMLSequenceNode":
    """The support sequence of `cine` for `segmentation`: its own sequence if it is a support proxy, the
    sequence it was copied into earlier, or a new one (a copy of it at the current frame; None: empty)."""
    if segmentation is None:
        return new_support_sequence(scene, browser, cine, f"{cine.GetName()} support")
    if segmentation.GetAttribute(ROLE_ATTRIBUTE) == "result":
        raise ValueError(f"{segmentation.GetName()!r} is an XRayVOS result; choose the support segmentation")
    existing = find_support_sequence(browser, segmentation)
    if existing is not None:
        own = cine_of(browser, existing)
        if own.GetID() != cine.GetID():
            raise ValueError(f"{segmentation.GetName()!r} is the support of cine {own.GetName()!r}, "
                             f"not of {cine.GetName()!r}")
        browser.SetSaveChanges(existing, True)
        synchronise_own_frames_only(browser, existing)
        return existing
    for other in browsers_using(scene, segmentation):
        if other is not browser and find_support_sequence(other, segmentation) is not None:
            raise ValueError(f"{segmentation.GetName()!r} is already synchronised with browser {other.GetName()!r}")
    copied = find_copy(browser, cine, segmentation)
    if copied is not None:
        return copied
    return new_support_sequence(scene, browser, cine, f"{segmentation.GetName()} support", segmentation)


def new_support_sequence(scene: "slicer.vtkMRMLScene", browser: "slicer.vtkMRMLSequenceBrowserNode",
                         cine: "slicer.vtkMRMLSequenceNode", name: str,
                         source: "slicer.vtkMRMLSegmentationNode | None" = None) -> "slicer.vtkMRMLSequenceNode":
    """A support sequence with one item per frame of `cine` and a new proxy segmentation; `source` (left
    untouched) is copied into the frame shown now, every other frame gets its segments, empty."""
    frame = current_frame(browser, cine) if source is not None else -1
    if source is not None and frame < 0:
        raise ValueError(f"the browser shows no frame of {cine.GetName()!r}: show one of its frames, then choose "
                         f"{source.GetName()!r} again")
    infos = S.segment_infos(source) if source is not None else []
    sequence = new_sequence_like(cine, scene.GenerateUniqueName(f"{name} sequence"))
    sequence.SetAttribute(ROLE_ATTRIBUTE, ROLE)
    for t in range(cine.GetNumberOfDataNodes()):
        if t == frame:
            item = S.copy_segmentation(source)
        else:
            item = slicer.vtkMRMLSegmentationNode()
            item.GetSegmentation().SetSourceRepresentationName(S.BINARY)
            for info in infos:
                S.add_segment(item, info)
        S.set_reference_geometry(item, cine.GetNthDataNode(t))
        sequence.SetDataNodeAtValue(item, cine.GetNthIndexValue(t))
    scene.AddNode(sequence)
    sequence.SetNodeReferenceID(CINE_REFERENCE, cine.GetID())
    if source is not None:
        sequence.SetNodeReferenceID(SOURCE_REFERENCE, source.GetID())
    if sequence.GetStorageNode() is None:
        sequence.AddDefaultStorageNode()
    proxy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    # The proxy holds the current item before it is one: "save changes" would record an empty proxy there.
    proxy.GetSegmentation().DeepCopy(_item_at_browser(browser, sequence).GetSegmentation())
    proxy_volume = browser.GetProxyNode(cine)
    if proxy_volume is not None:
        S.set_reference_geometry(proxy, proxy_volume)
    browser.AddProxyNode(proxy, sequence, False)  # synchronises the sequence, with this node as its proxy
    synchronise_own_frames_only(browser, sequence)
    browser.SetSaveChanges(sequence, True)
    proxy.CreateDefaultDisplayNodes()
    return sequence


def _item_at_browser(browser: "slicer.vtkMRMLSequenceBrowserNode",
                     sequence: "slicer.vtkMRMLSequenceNode") -> "slicer.vtkMRMLSegmentationNode":
    """The item of `sequence` the browser shows now (nearest one where it has none at the master's value)."""
    master = browser.GetMasterSequenceNode()
    value = master.GetNthIndexValue(max(browser.GetSelectedItemNumber(), 0))
    return sequence.GetDataNodeAtValue(value, False)


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
    if proxy is not None and current_frame(browser, cine_of(browser, sequence)) < 0:
        proxy = None  # it shows no item (a master frame this cine lacks): its emptiness deletes nothing
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
    """Frames of the sequence's own cine with a non-empty segment (one merged label map per item)."""
    cine = cine_of(browser, sequence)
    out = []
    for item_number, item in enumerate(items(sequence)):
        t = frame_index(cine, sequence, item_number)
        if t >= 0 and not S.is_empty(item, cine.GetNthDataNode(t)):
            out.append(t)
    return sorted(set(out))


class PaintedFrames:
    """The support frames of one support sequence, kept up to date one frame at a time.

    A paint stroke changes only the frame shown, so after one, update_current() reads that frame's label
    map from the proxy (which holds what was just painted) instead of every frame's (support_frames)."""

    def __init__(self, browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode") -> None:
        self.browser, self.sequence = browser, sequence
        self.cine = cine_of(browser, sequence)
        self._painted = set(support_frames(browser, sequence))

    def frames(self) -> list[int]:
        return sorted(self._painted)

    def update_current(self) -> list[int]:
        frame = current_frame(self.browser, self.cine)
        proxy = self.browser.GetProxyNode(self.sequence)
        if frame >= 0 and proxy is not None:
            if S.is_empty(proxy, self.cine.GetNthDataNode(frame)):
                self._painted.discard(frame)
            else:
                self._painted.add(frame)
        return self.frames()


def paint_frame(browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode", frame: int,
                labels: np.ndarray, names: dict[int, str] | None = None,
                colors: dict[int, Sequence[float]] | None = None) -> list[str]:
    """Write a label map [H, W] (0 = background, k = object k) into frame `frame` of the sequence's cine,
    through the proxy (the browser is moved to that frame, as when painting in the Segment Editor).

    Object k goes to the segment named names[k] (default "Object k"), created if needed; segments with no
    label in `labels` are cleared at this frame. Returns the segment IDs by label value order.
    """
    cine = cine_of(browser, sequence)
    labels = np.asarray(labels)
    show_frame(browser, cine, frame)
    proxy = browser.GetProxyNode(sequence)
    volume = cine.GetNthDataNode(frame)  # this cine's frame geometry, whichever cine is the master
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
    width, height, _ = cine_of(browser, sequence).GetNthDataNode(frame).GetImageData().GetDimensions()
    paint_frame(browser, sequence, frame, np.zeros((height, width), np.uint8))
