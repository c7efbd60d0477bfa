"""Write-back: the result segmentation sequence, synchronised with the cine's browser.

One item per cine frame at the cine's own index values, with the support's segments (IDs, names,
colours, terminology). Support frames are copies of the support items, never predictions. A re-run
replaces the earlier result computed from the same support sequence (found through its node
references), and never touches the support sequence itself. A sequence read from a DICOM SEG
(dicom_export) is written the same way, without a support reference.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
import slicer

from . import segments as S
from .sequences import (CINE_REFERENCE, ROLE_ATTRIBUTE, SUPPORT_REFERENCE, cine_of, frame_index,
                        new_sequence_like, synchronise_own_frames_only, synchronized_sequences)

ROLE = "result"
REVIEWED_ATTRIBUTE = "XRayVOS.ReviewedFrames"  # result frames the user accepted as labels (see training_cases)


def find_result_sequence(browser: "slicer.vtkMRMLSequenceBrowserNode",
                         support: "slicer.vtkMRMLSequenceNode") -> "slicer.vtkMRMLSequenceNode | None":
    for sequence in synchronized_sequences(browser):
        if sequence.GetAttribute(ROLE_ATTRIBUTE) == ROLE and sequence.GetNodeReference(SUPPORT_REFERENCE) is support:
            return sequence
    return None


def snapshot_supports(cine: "slicer.vtkMRMLSequenceNode", support: "slicer.vtkMRMLSequenceNode",
                      frames: Sequence[int]) -> dict[int, "slicer.vtkMRMLSegmentationNode"]:
    """Copies of the support items at `frames` (taken when a run starts, so later painting cannot mix in)."""
    wanted = set(int(t) for t in frames)
    out = {}
    for item_number in range(support.GetNumberOfDataNodes()):
        t = frame_index(cine, support, item_number)
        if t in wanted:
            out[t] = S.copy_segmentation(support.GetNthDataNode(item_number))
    missing = wanted - set(out)
    if missing:
        raise ValueError(f"support sequence {support.GetName()!r} has no item at frame(s) {sorted(missing)}")
    return out


def write_result(scene: "slicer.vtkMRMLScene", browser: "slicer.vtkMRMLSequenceBrowserNode",
                 support: "slicer.vtkMRMLSequenceNode", labels: np.ndarray, infos: Sequence[S.SegmentInfo],
                 originals: Mapping[int, "slicer.vtkMRMLSegmentationNode"], attributes: Mapping[str, Any] | None = None,
                 name: str | None = None) -> "slicer.vtkMRMLSequenceNode":
    """labels [T, H, W] (value k = infos[k-1]) -> the result sequence, created or replaced in place.

    `originals` maps support frames to the segmentations painted there (see snapshot_supports); those
    frames are stored as painted, whatever `labels` holds. The result belongs to the support's cine.
    """
    return write_sequence(scene, browser, cine_of(browser, support), labels, infos, originals, attributes, name,
                          find_result_sequence(browser, support), support)


def write_sequence(scene: "slicer.vtkMRMLScene", browser: "slicer.vtkMRMLSequenceBrowserNode",
                   cine: "slicer.vtkMRMLSequenceNode", labels: np.ndarray, infos: Sequence[S.SegmentInfo],
                   originals: Mapping[int, "slicer.vtkMRMLSegmentationNode"],
                   attributes: Mapping[str, Any] | None = None, name: str | None = None,
                   sequence: "slicer.vtkMRMLSequenceNode | None" = None,
                   support: "slicer.vtkMRMLSequenceNode | None" = None) -> "slicer.vtkMRMLSequenceNode":
    """A result-role segmentation sequence of `cine`: `sequence` replaced in place, or a new one.

    support: the support sequence it was computed from (None for one read from a DICOM SEG, see dicom_export).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != cine.GetNumberOfDataNodes():
        raise ValueError(f"result of shape {labels.shape} does not fit a cine of {cine.GetNumberOfDataNodes()} frames")
    if labels.max(initial=0) > len(infos):
        raise ValueError(f"result holds label {int(labels.max())} but only {len(infos)} segments are known")

    built = []  # build every item before touching the scene: a failure leaves the earlier result intact
    for t in range(labels.shape[0]):
        volume = cine.GetNthDataNode(t)
        if t in originals:
            item = S.copy_segmentation(originals[t])  # exactly what the user painted
            for info in infos:
                S.add_segment(item, info)
        else:
            item = S.segmentation_from_labels(labels[t], volume, infos)
        S.set_reference_geometry(item, volume)
        item.SetAttribute(ROLE_ATTRIBUTE, ROLE)  # the browser copies item attributes onto the proxy
        built.append(item)

    created = sequence is None
    if created:
        sequence = new_sequence_like(cine, scene.GenerateUniqueName(name or f"{cine.GetName()} XRayVOS"))
        sequence.SetAttribute(ROLE_ATTRIBUTE, ROLE)
    was_modifying = sequence.StartModify()
    try:
        sequence.RemoveAllDataNodes()
        for t, item in enumerate(built):
            sequence.SetDataNodeAtValue(item, cine.GetNthIndexValue(t))
        sequence.SetAttribute("XRayVOS.SupportFrames", ",".join(str(t) for t in sorted(originals)))
        sequence.SetAttribute("XRayVOS.Created", time.strftime("%Y-%m-%d %H:%M:%S"))
        sequence.RemoveAttribute(REVIEWED_ATTRIBUTE)  # reviews were of the predictions just replaced
        for key, value in (attributes or {}).items():
            if value is None:  # not part of this run (e.g. the threshold of an area-prior run)
                sequence.RemoveAttribute(key)
            else:
                sequence.SetAttribute(key, str(value))
    finally:
        sequence.EndModify(was_modifying)
    if created:
        scene.AddNode(sequence)
        sequence.SetNodeReferenceID(CINE_REFERENCE, cine.GetID())
        if support is not None:
            sequence.SetNodeReferenceID(SUPPORT_REFERENCE, support.GetID())
        if sequence.GetStorageNode() is None:
            sequence.AddDefaultStorageNode()
        browser.AddSynchronizedSequenceNode(sequence)
        synchronise_own_frames_only(browser, sequence)
        browser.SetOverwriteProxyName(sequence, True)
        browser.SetSaveChanges(sequence, False)  # corrections belong in the support, not the result
    _refresh_proxy(browser, sequence)
    return sequence


def _refresh_proxy(browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode") -> None:
    """Make the proxy show the new content at the current frame and mark it as a result."""
    current = browser.GetSelectedItemNumber()
    master = browser.GetMasterSequenceNode()  # the browser's index value is the master's
    proxy = browser.GetProxyNode(sequence)
    if proxy is None or current < 0:
        return
    item = sequence.GetDataNodeAtValue(master.GetNthIndexValue(current), True)
    if item is not None:
        proxy.GetSegmentation().DeepCopy(item.GetSegmentation())
    else:  # no frame of this cine at the master's (see synchronise_own_frames_only)
        proxy.GetSegmentation().RemoveAllSegments()
    proxy.SetAttribute(ROLE_ATTRIBUTE, ROLE)
    if proxy.GetDisplayNode() is None:
        proxy.CreateDefaultDisplayNodes()


def result_labelmaps(browser: "slicer.vtkMRMLSequenceBrowserNode", sequence: "slicer.vtkMRMLSequenceNode",
                     segment_ids: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """([T, H, W] uint8 label maps in frame order of the sequence's cine, segment IDs by label value) from a
    support or result sequence."""
    cine = cine_of(browser, sequence)
    ids = list(segment_ids) if segment_ids is not None else S.segment_ids(sequence.GetNthDataNode(0))
    out = None
    for item_number in range(sequence.GetNumberOfDataNodes()):
        t = frame_index(cine, sequence, item_number)
        if t < 0:
            continue
        labels = S.labelmap(sequence.GetNthDataNode(item_number), cine.GetNthDataNode(t), ids)
        if out is None:
            out = np.zeros((cine.GetNumberOfDataNodes(), *labels.shape), np.uint8)
        out[t] = labels
    if out is None:
        raise ValueError(f"sequence {sequence.GetName()!r} has no item at any of the cine's index values")
    return out, ids
