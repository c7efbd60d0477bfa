"""Segmentation nodes <-> numpy label maps, in the geometry of one cine frame.

Everything here works on nodes that are not in a scene (sequence items) as well as on proxy nodes, and
uses no temporary scene nodes, so nothing is left behind in the user's scene or undo history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

BINARY = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()

# Used only for segments a script creates without colours (DAVIS-like, distinct on grey X-ray).
PALETTE = [(0.90, 0.10, 0.10), (0.10, 0.75, 0.20), (0.95, 0.80, 0.10), (0.15, 0.35, 0.95),
           (0.85, 0.20, 0.85), (0.10, 0.80, 0.85), (0.95, 0.55, 0.10), (0.60, 0.30, 0.95)]


@dataclass
class SegmentInfo:
    """One object: its segment ID, and a metadata-only copy of the segment (name, colour, terminology tags)."""

    segment_id: str
    template: "slicer.vtkSegment"

    @property
    def name(self) -> str:
        return self.template.GetName()

    @property
    def color(self) -> tuple[float, float, float]:
        return tuple(self.template.GetColor())  # type: ignore[return-value]


def segment_ids(node: "slicer.vtkMRMLSegmentationNode") -> list[str]:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_infos(node: "slicer.vtkMRMLSegmentationNode") -> list[SegmentInfo]:
    infos = []
    for segment_id in segment_ids(node):
        template = slicer.vtkSegment()
        template.DeepCopyMetadata(node.GetSegmentation().GetSegment(segment_id))
        infos.append(SegmentInfo(segment_id, template))
    return infos


def merge_infos(groups: Iterable[Sequence[SegmentInfo]]) -> list[SegmentInfo]:
    """Union by segment ID, first appearance wins (order = label values 1..N)."""
    seen: dict[str, SegmentInfo] = {}
    for infos in groups:
        for info in infos:
            seen.setdefault(info.segment_id, info)
    return list(seen.values())


def frame_geometry(volume: "slicer.vtkMRMLVolumeNode") -> "slicer.vtkOrientedImageData":
    """An empty oriented image with the volume's extent and IJK-to-RAS (the frame's geometry)."""
    image = volume.GetImageData()
    if image is None:
        raise ValueError(f"volume {volume.GetName()!r} has no image data")
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(image.GetExtent())
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    geometry.SetImageToWorldMatrix(ijk_to_ras)
    return geometry


def _frame_shape(geometry: "slicer.vtkOrientedImageData") -> tuple[int, int]:
    extent = geometry.GetExtent()
    if extent[5] != extent[4]:
        raise ValueError("a cine frame must be a single slice (k extent of 1)")
    return extent[3] - extent[2] + 1, extent[1] - extent[0] + 1


def oriented_from_array(array: np.ndarray, volume: "slicer.vtkMRMLVolumeNode") -> "slicer.vtkOrientedImageData":
    """uint8 [H, W] -> oriented image in the frame's geometry (row = j, column = i)."""
    geometry = frame_geometry(volume)
    shape = _frame_shape(geometry)
    if tuple(array.shape) != shape:
        raise ValueError(f"label map of shape {array.shape} does not match the frame ({shape})")
    geometry.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    scalars = numpy_support.vtk_to_numpy(geometry.GetPointData().GetScalars())
    scalars[:] = np.ascontiguousarray(array, dtype=np.uint8).ravel()
    geometry.GetPointData().GetScalars().Modified()
    return geometry


def ensure_binary(node: "slicer.vtkMRMLSegmentationNode") -> None:
    segmentation = node.GetSegmentation()
    if segmentation.GetNumberOfSegments() and not segmentation.ContainsRepresentation(BINARY):
        segmentation.CreateRepresentation(BINARY)


def labelmap(node: "slicer.vtkMRMLSegmentationNode", volume: "slicer.vtkMRMLVolumeNode",
             ids: Sequence[str]) -> np.ndarray:
    """uint8 [H, W]: segment ids[k] -> k + 1, absent segments stay 0. Overlaps: the later segment wins."""
    geometry = frame_geometry(volume)
    shape = _frame_shape(geometry)
    present = [(k + 1, sid) for k, sid in enumerate(ids) if node.GetSegmentation().GetSegment(sid) is not None]
    if not present:
        return np.zeros(shape, np.uint8)
    if len(ids) > 255:
        raise ValueError(f"{len(ids)} segments: XRayVOS handles at most 255 objects")
    ensure_binary(node)
    id_array, value_array = vtk.vtkStringArray(), vtk.vtkIntArray()
    for value, sid in present:
        id_array.InsertNextValue(sid)
        value_array.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    ok = node.GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry, id_array, value_array)
    if not ok or merged.GetPointData().GetScalars() is None:
        raise RuntimeError(f"could not export the segments of {node.GetName()!r} as a label map")
    if tuple(merged.GetExtent()) != tuple(geometry.GetExtent()):
        raise RuntimeError(f"label map extent {merged.GetExtent()} differs from the frame {geometry.GetExtent()}")
    return numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(shape).astype(np.uint8)


def is_empty(node: "slicer.vtkMRMLSegmentationNode", volume: "slicer.vtkMRMLVolumeNode") -> bool:
    ids = segment_ids(node)
    return not ids or not labelmap(node, volume, ids).any()


def set_segment_mask(node: "slicer.vtkMRMLSegmentationNode", segment_id: str, mask: np.ndarray,
                     volume: "slicer.vtkMRMLVolumeNode") -> None:
    """Replace one segment's voxels by a boolean [H, W] mask, as a Segment Editor effect would."""
    image = oriented_from_array(np.asarray(mask).astype(bool).astype(np.uint8), volume)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, node, segment_id, logic.MODE_REPLACE, image.GetExtent()):
        raise RuntimeError(f"could not write segment {segment_id!r} of {node.GetName()!r}")


def add_segment(node: "slicer.vtkMRMLSegmentationNode", info: SegmentInfo) -> None:
    """Add an empty segment with the same ID and metadata (no-op if the ID exists)."""
    segmentation = node.GetSegmentation()
    if segmentation.GetSegment(info.segment_id) is not None:
        return
    segmentation.AddEmptySegment(info.segment_id, info.name, list(info.color))
    segment = segmentation.GetSegment(info.segment_id)
    # DeepCopyMetadata also copies the label value, which must stay unique within a shared labelmap.
    label_value = segment.GetLabelValue()
    segment.DeepCopyMetadata(info.template)
    segment.SetLabelValue(label_value)


def new_info(segment_id: str, name: str, color: Sequence[float] | None, index: int) -> SegmentInfo:
    template = slicer.vtkSegment()
    template.SetName(name)
    template.SetNameAutoGenerated(False)
    template.SetColor(*(color if color is not None else PALETTE[index % len(PALETTE)]))
    template.SetColorAutoGenerated(False)
    return SegmentInfo(segment_id, template)


def set_reference_geometry(node: "slicer.vtkMRMLSegmentationNode", volume: "slicer.vtkMRMLVolumeNode") -> None:
    """Reference geometry = the frame's (the Segment Editor then paints on the frame's pixel grid)."""
    if node.GetScene() is not None and volume.GetScene() is node.GetScene():
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        return
    # Sequence items live outside the scene: set the parameter without a node reference.
    geometry = frame_geometry(volume)
    node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(geometry))


def segmentation_from_labels(labels: np.ndarray, volume: "slicer.vtkMRMLVolumeNode",
                             infos: Sequence[SegmentInfo]) -> "slicer.vtkMRMLSegmentationNode":
    """A standalone segmentation node: infos[k] <- labels == k + 1, all segments in one shared labelmap."""
    node = slicer.vtkMRMLSegmentationNode()
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(BINARY)
    set_reference_geometry(node, volume)
    shared = oriented_from_array(np.asarray(labels, np.uint8), volume)
    for value, info in enumerate(infos, start=1):
        segment = slicer.vtkSegment()
        segment.DeepCopyMetadata(info.template)
        segment.SetLabelValue(value)
        segment.AddRepresentation(BINARY, shared)
        segmentation.AddSegment(segment, info.segment_id)
    return node


def copy_segmentation(source: "slicer.vtkMRMLSegmentationNode") -> "slicer.vtkMRMLSegmentationNode":
    node = slicer.vtkMRMLSegmentationNode()
    node.GetSegmentation().DeepCopy(source.GetSegmentation())
    return node
