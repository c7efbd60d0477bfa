"""Cine <-> volume sequence: one single-slice scalar volume per frame, browsed by a sequence browser.

Index values follow Slicer's own DICOM image-sequence loader, so a cine loaded through the DICOM module
and one loaded with "Load cine file..." look alike: index name "time", unit "s", values formatted with
3 decimals (millisecond precision), playback rate = the cine's frame rate. A source without timing (an
image folder, or DICOM without frame times) gets index name "frame" and values 0, 1, 2, ...

Frame geometry matches Slicer's loaders too: IJK-to-RAS = diag(-column spacing, -row spacing, 1), so
row 0 is at the top of the axial view and column 0 at the left. A source without spacing gets 1 mm.

A browser may hold more than one cine: Slicer's DICOM image-sequence plugin loads both planes of a
biplane XA run into one browser, plane A the master. A support or result sequence belongs to one cine
(its CINE_REFERENCE, see cine_of), and its frame t is that cine's item t, whatever the master is; the
browser's selected item is a master item, translated by current_frame / show_frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

TIME_INDEX = ("time", "s")
FRAME_INDEX = ("frame", "")
ROLE_ATTRIBUTE = "XRayVOS.Role"  # "cine", "support" or "result", on sequence nodes
# Node references (kept valid when a scene is saved and reloaded, unlike IDs stored in attributes)
CINE_REFERENCE = "xrayvosCine"  # support / result sequence -> the cine sequence
SUPPORT_REFERENCE = "xrayvosSupport"  # result sequence -> the support sequence it was computed from
SOURCE_REFERENCE = "xrayvosSource"  # support sequence -> the segmentation it was copied from (see supports)
CINE_ITEM_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")
_VTK_TYPES = {np.dtype(np.uint8): vtk.VTK_UNSIGNED_CHAR, np.dtype(np.uint16): vtk.VTK_UNSIGNED_SHORT,
              np.dtype(np.int16): vtk.VTK_SHORT, np.dtype(np.float32): vtk.VTK_FLOAT}


def index_values(num_frames: int, frame_times: Sequence[float] | None) -> tuple[str, str, list[str]]:
    """(index name, unit, values); times in seconds with 3 decimals, or frame numbers if untimed/ambiguous."""
    if frame_times is not None and len(frame_times) == num_frames:
        values = [f"{float(t):.3f}" for t in frame_times]
        numeric = [float(v) for v in values]
        if all(b > a for a, b in zip(numeric, numeric[1:], strict=False)):
            return TIME_INDEX[0], TIME_INDEX[1], values
    return FRAME_INDEX[0], FRAME_INDEX[1], [str(t) for t in range(num_frames)]


def frame_ijk_to_ras(spacing: Sequence[float] | None) -> vtk.vtkMatrix4x4:
    """spacing = (row, column) mm as XRayVOSLib.io reports it; None -> 1 mm."""
    row, col = (float(spacing[0]), float(spacing[1])) if spacing else (1.0, 1.0)
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 0, -col)
    matrix.SetElement(1, 1, -row)
    return matrix


def frame_volume(frame: np.ndarray, ijk_to_ras: vtk.vtkMatrix4x4) -> "slicer.vtkMRMLScalarVolumeNode":
    """A standalone single-slice volume holding one [H, W] frame (a copy)."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"a frame must be [H, W], got shape {frame.shape}")
    dtype = frame.dtype if frame.dtype in _VTK_TYPES else np.dtype(np.float32)
    height, width = frame.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    image.AllocateScalars(_VTK_TYPES[np.dtype(dtype)], 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = frame.astype(dtype, copy=False).ravel()
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetAndObserveImageData(image)
    volume.SetIJKToRASMatrix(ijk_to_ras)
    return volume


def frame_array(volume: "slicer.vtkMRMLVolumeNode") -> np.ndarray:
    """[H, W] copy of a single-slice volume; colour frames become BT.601 luma."""
    image = volume.GetImageData()
    if image is None:
        raise ValueError(f"volume {volume.GetName()!r} has no image data")
    width, height, depth = image.GetDimensions()
    if depth != 1:
        raise ValueError(f"volume {volume.GetName()!r} has {depth} slices; a cine frame must be one slice")
    components = image.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, components)
    if components == 1:
        return array[..., 0].copy()
    grey = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    top = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else None
    return np.clip(np.rint(grey), 0, top).astype(array.dtype)


def add_cine_sequence(scene: "slicer.vtkMRMLScene", frames, frame_times: Sequence[float] | None = None,
                      spacing: Sequence[float] | None = None, name: str = "Cine",
                      attributes: dict[str, str] | None = None) -> "slicer.vtkMRMLSequenceBrowserNode":
    """Frames [T, H, W] (any array-like, read one frame at a time) -> volume sequence + browser in the scene."""
    num_frames = int(frames.shape[0]) if hasattr(frames, "shape") else len(frames)
    if num_frames < 1:
        raise ValueError("a cine needs at least one frame")
    index_name, index_unit, values = index_values(num_frames, frame_times)
    sequence = slicer.vtkMRMLSequenceNode()
    sequence.SetName(scene.GenerateUniqueName(name))
    sequence.SetIndexName(index_name)
    sequence.SetIndexUnit(index_unit)
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    sequence.SetAttribute(ROLE_ATTRIBUTE, "cine")
    for key, value in (attributes or {}).items():
        sequence.SetAttribute(key, str(value))
    ijk_to_ras = frame_ijk_to_ras(spacing)
    for t in range(num_frames):
        sequence.SetDataNodeAtValue(frame_volume(np.asarray(frames[t]), ijk_to_ras), values[t])
    scene.AddNode(sequence)
    if sequence.GetStorageNode() is None:
        sequence.AddDefaultStorageNode()  # volume sequences save as .seq.nrrd
    browser = slicer.vtkMRMLSequenceBrowserNode()
    browser.SetName(scene.GenerateUniqueName(f"{sequence.GetName()} browser"))
    if index_name == TIME_INDEX[0] and num_frames > 1:
        step = float(np.median(np.diff([float(v) for v in values])))
        browser.SetPlaybackRateFps(1.0 / step if step > 0 else 15.0)
    scene.AddNode(browser)
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetOverwriteProxyName(sequence, True)
    browser.SetSelectedItemNumber(0)
    return browser


def load_cine_file(scene: "slicer.vtkMRMLScene", path: str | Path,
                   name: str | None = None) -> "slicer.vtkMRMLSequenceBrowserNode":
    """Anything XRayVOSLib.io.read_cine reads -> volume sequence with the cine's spacing and frame times."""
    from XRayVOSLib.io import read_cine  # deferred: pulls in pydicom and friends

    cine = read_cine(path)
    timed = not cine.tags.get("frame_time_assumed")
    attributes = {"XRayVOS.SourcePath": str(Path(path).resolve()), "XRayVOS.SourceKind": cine.source_kind}
    return add_cine_sequence(scene, cine.frames, cine.frame_times if timed else None, cine.spacing,
                             name or Path(path).name.split(".")[0], attributes)


def browsers(scene: "slicer.vtkMRMLScene") -> list["slicer.vtkMRMLSequenceBrowserNode"]:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))]


def synchronized_sequences(browser: "slicer.vtkMRMLSequenceBrowserNode") -> list["slicer.vtkMRMLSequenceNode"]:
    collection = vtk.vtkCollection()
    browser.GetSynchronizedSequenceNodes(collection, True)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def resolve_cine(scene: "slicer.vtkMRMLScene", node) -> tuple["slicer.vtkMRMLSequenceBrowserNode",
                                                               "slicer.vtkMRMLSequenceNode"]:
    """(browser, cine volume sequence) from a browser, a volume sequence, or a browser's proxy volume."""
    if node is None:
        raise ValueError("no input cine selected")
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        sequence = node.GetMasterSequenceNode()
        if sequence is None:
            raise ValueError(f"browser {node.GetName()!r} has no sequence")
        return node, sequence
    if node.IsA("vtkMRMLSequenceNode"):
        for browser in browsers(scene):
            if browser.GetMasterSequenceNode() is node:
                return browser, node
        for browser in browsers(scene):
            if browser.IsSynchronizedSequenceNodeID(node.GetID(), True):
                return browser, node
        browser = slicer.vtkMRMLSequenceBrowserNode()  # a bare sequence: give it a browser to paint on
        browser.SetName(scene.GenerateUniqueName(f"{node.GetName()} browser"))
        scene.AddNode(browser)
        browser.SetAndObserveMasterSequenceNodeID(node.GetID())
        return browser, node
    for browser in browsers(scene):  # a proxy volume
        if browser.IsProxyNodeID(node.GetID()):
            return browser, browser.GetSequenceNode(node)
    raise ValueError(f"{node.GetName()!r} is neither a sequence, a sequence browser nor a browser's proxy node")


def check_cine(sequence: "slicer.vtkMRMLSequenceNode") -> None:
    if sequence.GetNumberOfDataNodes() < 2:
        raise ValueError(f"cine {sequence.GetName()!r} has {sequence.GetNumberOfDataNodes()} frame(s); "
                         "XRayVOS needs at least 2")
    if sequence.GetDataNodeClassName() not in CINE_ITEM_CLASSES:
        raise ValueError(f"{sequence.GetName()!r} holds {sequence.GetDataNodeClassName()} items, not image frames")


def cine_frames(sequence: "slicer.vtkMRMLSequenceNode") -> np.ndarray:
    """[T, H, W] in item order; every frame must have the same size."""
    check_cine(sequence)
    first = frame_array(sequence.GetNthDataNode(0))
    frames = np.empty((sequence.GetNumberOfDataNodes(), *first.shape), first.dtype)
    frames[0] = first
    for t in range(1, frames.shape[0]):
        frame = frame_array(sequence.GetNthDataNode(t))
        if frame.shape != first.shape:
            raise ValueError(f"cine {sequence.GetName()!r}: frame {t} is {frame.shape}, frame 0 is {first.shape}")
        frames[t] = frame
    return frames


def frame_index(cine: "slicer.vtkMRMLSequenceNode", other: "slicer.vtkMRMLSequenceNode", item: int) -> int:
    """The cine frame at the index value of another sequence's item (-1 where the cine has none)."""
    return cine.GetItemNumberFromIndexValue(other.GetNthIndexValue(item), True)


def new_sequence_like(cine: "slicer.vtkMRMLSequenceNode", name: str) -> "slicer.vtkMRMLSequenceNode":
    sequence = slicer.vtkMRMLSequenceNode()
    sequence.SetName(name)
    sequence.SetIndexName(cine.GetIndexName())
    sequence.SetIndexUnit(cine.GetIndexUnit())
    sequence.SetIndexType(cine.GetIndexType())
    return sequence


def cine_of(browser: "slicer.vtkMRMLSequenceBrowserNode",
            sequence: "slicer.vtkMRMLSequenceNode") -> "slicer.vtkMRMLSequenceNode":
    """The cine a support or result sequence was made for; the browser's master for one made before the
    reference existed."""
    cine = sequence.GetNodeReference(CINE_REFERENCE)
    return cine if cine is not None else browser.GetMasterSequenceNode()


def current_frame(browser: "slicer.vtkMRMLSequenceBrowserNode", cine: "slicer.vtkMRMLSequenceNode") -> int:
    """The frame of `cine` the browser shows now; -1 where `cine` has no item at the master's index value."""
    master = browser.GetMasterSequenceNode()
    item = browser.GetSelectedItemNumber()
    if item < 0 or master is None or cine.GetID() == master.GetID():
        return item
    return cine.GetItemNumberFromIndexValue(master.GetNthIndexValue(item), True)


def show_frame(browser: "slicer.vtkMRMLSequenceBrowserNode", cine: "slicer.vtkMRMLSequenceNode", frame: int) -> None:
    """Make the browser show frame `frame` of `cine` (it selects the master's item at that index value)."""
    if not 0 <= frame < cine.GetNumberOfDataNodes():
        raise ValueError(f"frame {frame} out of range for a cine of {cine.GetNumberOfDataNodes()} frames")
    master = browser.GetMasterSequenceNode()
    item = frame
    if cine.GetID() != master.GetID():
        value = cine.GetNthIndexValue(frame)
        item = master.GetItemNumberFromIndexValue(value, True)
        if item < 0:
            raise ValueError(f"frame {frame} of {cine.GetName()!r} ({cine.GetIndexName()} {value}) has no frame of "
                             f"{master.GetName()!r}, the master of {browser.GetName()!r}, at the same index value, "
                             "so Slicer cannot show it")
    browser.SetSelectedItemNumber(item)


def non_cine_sequence_ids(scene: "slicer.vtkMRMLScene") -> list[str]:
    """Sequences that cannot be a cine: XRayVOS supports and results, and any sequence of non-image items
    (kept out of the module's cine selector)."""
    out = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
        sequence = scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
        role = sequence.GetAttribute(ROLE_ATTRIBUTE)
        if role in ("support", "result") or (sequence.GetNumberOfDataNodes()
                                             and sequence.GetDataNodeClassName() not in CINE_ITEM_CLASSES):
            out.append(sequence.GetID())
    return out


def synchronise_own_frames_only(browser: "slicer.vtkMRMLSequenceBrowserNode",
                                sequence: "slicer.vtkMRMLSequenceNode") -> None:
    """Where the master shows an index value the sequence lacks (plane B of a biplane browser), show it empty
    and add no item; painting there is undone rather than recorded into another frame."""
    browser.SetMissingItemMode(sequence, slicer.vtkMRMLSequenceBrowserNode.MissingItemSetToDefault)
