"""Export to DICOM and Load DICOM SEG on a real MRML scene: a result sequence of a real XA phantom cine written as
a DICOM SEG and read back into an equal segmentation sequence, and the cine's DICOM found both ways Slicer can
know it (the module's own loader records the file; Slicer's DICOM plugins record each frame's SOP Instance UID).

slicer-core has no DICOM database (ctkDICOMDatabase lives in the Slicer application): where a test needs one,
FakeDicomDatabase answers the two calls the module makes (fileForInstance, insert) from real phantom files. The
real database is exercised by the module's self-test in Slicer (xrayvos_gui/self_test.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from XRayVOSLib.errors import InputError
from XRayVOSLib.io import read_cine
from XRayVOSLib.seg import read_dicom_seg, write_dicom_seg
from XRayVOSLib.settings import RunSettings

pytestmark = pytest.mark.slicer

# Slicer's terminology entry: context~category~type~...; this one says catheter (SCT 19923001).
CATHETER_TERMINOLOGY = ("Segmentation category and type - DICOM master list~SCT^260787004^Physical object"
                        "~SCT^19923001^Catheter~^^~Anatomic codes - DICOM master list~^^~^^")


class FakeDicomDatabase:
    """The two ctkDICOMDatabase calls the module makes, answered from files on disk."""

    def __init__(self, files: list[Path]) -> None:
        self.files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in files}
        self.inserted: list[str] = []

    def fileForInstance(self, uid: str) -> str:  # noqa: N802 (ctkDICOMDatabase's name)
        return self.files.get(uid, "")

    def insert(self, path: str) -> None:
        self.inserted.append(path)


def _drawn(height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), np.uint8)
    labels[100:170, 200:260] = 1
    labels[300:330, 40:420] = 2
    labels[400:460, 380:470] = 3
    return labels


def _as_dicom_module_loads(logic, files: list[Path], uids: list[str], name: str):
    """A cine as DICOMImageSequencePlugin makes it: frame volumes carrying DICOM.instanceUIDs (the plugin sets it
    on the frame volume before SetDataNodeAtValue, which copies it onto the item) and no XRayVOS source path."""
    if len(files) == 1:  # one multi-frame instance
        frames = read_cine(files[0]).to_array()
    else:  # one single-frame instance per frame
        frames = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    browser = logic.add_cine(frames, None, None, name)
    cine = browser.GetMasterSequenceNode()
    for t, uid in enumerate(uids):
        cine.GetNthDataNode(t).SetAttribute("DICOM.instanceUIDs", uid)
    return browser


def _segments(sequence) -> list[tuple[str, tuple[float, ...]]]:
    first = sequence.GetNthDataNode(0).GetSegmentation()
    return [(first.GetNthSegment(i).GetName(), tuple(first.GetNthSegment(i).GetColor()))
            for i in range(first.GetNumberOfSegments())]


def test_a_flow_result_exports_to_a_dicom_seg_and_loads_back_equal(logic, phantom_dir: Path, tmp_path: Path):
    from xrayvos_slicer import segments as S
    from xrayvos_slicer.sequences import ROLE_ATTRIBUTE

    source = phantom_dir / "IM8.dcm"
    browser = logic.load_cine(source)  # the module's "Load cine file..."
    cine = browser.GetMasterSequenceNode()
    T = cine.GetNumberOfDataNodes()
    painted = _drawn(512, 512)
    names = {1: "LAD", 2: "JR4 catheter", 3: "Object A"}
    support = logic.set_support(browser, 0, painted, names=names)
    logic.set_support(browser, T - 1, np.roll(painted, 6, axis=1), support=support, names=names)
    segmentation = support.GetSegmentation()
    segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Object A")).SetTag(
        "TerminologyEntry", CATHETER_TERMINOLOGY)
    result = logic.propagate(browser, support, RunSettings(method="flow"))  # the real background worker
    expected, expected_names = logic.label_arrays(browser, result)
    assert expected_names == ["LAD", "JR4 catheter", "Object A"] and (expected[1:T - 1] > 0).any()

    done = logic.export_dicom_seg(browser, support, tmp_path / "im8_seg.dcm")
    assert done.path == tmp_path / "im8_seg.dcm" and done.source.path == source and not done.in_database
    assert (done.frames, done.segments) == (T, 3)
    seg = read_dicom_seg(done.path, source)  # the library's reader: labels, names, painted frames
    np.testing.assert_array_equal(seg.labels, expected)
    assert seg.objects == {1: "LAD", 2: "JR4 catheter", 3: "Object A"} and seg.supports == (0, T - 1)
    assert seg.kinds == {1: "artery", 2: "catheter", 3: "catheter"}  # "Object A" from its terminology
    ds = pydicom.dcmread(done.path)
    sop = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
    assert {g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for g in ds.PerFrameFunctionalGroupsSequence} == {sop}
    assert [item.SegmentAlgorithmType for item in ds.SegmentSequence] == ["SEMIAUTOMATIC"] * 3
    assert "method=flow" in ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters

    back = logic.load_dicom_seg(browser, done.path)  # the module's "Load DICOM SEG..."
    assert back.GetID() != result.GetID() and back.GetAttribute(ROLE_ATTRIBUTE) == "result"
    assert browser.IsSynchronizedSequenceNodeID(back.GetID(), False)
    assert back.GetNumberOfDataNodes() == T
    assert [back.GetNthIndexValue(t) for t in range(T)] == [cine.GetNthIndexValue(t) for t in range(T)]
    labels, back_names = logic.label_arrays(browser, back)
    np.testing.assert_array_equal(labels, expected)  # every frame, every pixel
    assert back_names == expected_names
    for (name, colour), (name0, colour0) in zip(_segments(back), _segments(result), strict=True):
        assert name == name0 and colour == pytest.approx(colour0, abs=1 / 255)  # CIELab in the SEG, 8-bit RGB
    assert back.GetAttribute("XRayVOS.SupportFrames") == result.GetAttribute("XRayVOS.SupportFrames") == f"0,{T - 1}"
    assert back.GetAttribute("XRayVOS.Method") == "flow"
    for t in range(T):  # each item in its own frame's geometry, as a propagated result
        expected_geometry = S.slicer.vtkSegmentationConverter.SerializeImageGeometry(
            S.frame_geometry(cine.GetNthDataNode(t)))
        assert back.GetNthDataNode(t).GetSegmentation().GetConversionParameter(
            "Reference image geometry") == expected_geometry

    again = logic.export_dicom_seg(browser, back, tmp_path / "again.dcm")  # the loaded sequence exports the same
    again_seg = read_dicom_seg(again.path, source)
    np.testing.assert_array_equal(again_seg.labels, expected)
    assert (again_seg.objects, again_seg.kinds, again_seg.supports) == (seg.objects, seg.kinds, seg.supports)


def test_a_cine_from_the_dicom_database_is_found_by_its_instance_uids(logic, phantom_dir: Path, tmp_path: Path):
    from xrayvos_slicer import dicom_export

    source = phantom_dir / "IM6.dcm"
    database = FakeDicomDatabase([source, phantom_dir / "IM7.dcm"])
    uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    T = read_cine(source).num_frames
    browser = _as_dicom_module_loads(logic, [source], [uid] * T, "6: XA [7]")
    cine = browser.GetMasterSequenceNode()
    found = dicom_export.dicom_source(cine, database)
    assert (found.path, found.from_database, found.uids) == (source, True, (uid,) * T)
    with pytest.raises(InputError, match=r"DICOM database, which is not open"):
        dicom_export.dicom_source(cine)  # slicer-core has no slicer.dicomDatabase
    assert dicom_export.open_dicom_database() is None

    support = logic.set_support(browser, 0, _drawn(512, 512), names={1: "LAD", 2: "catheter", 3: "wire"})
    result = logic.propagate(browser, support, RunSettings(method="copy"))
    done = logic.export_dicom_seg(browser, support, tmp_path / "im6_seg.dcm", database=database)
    assert done.in_database and database.inserted == [str(done.path)]
    back = logic.load_dicom_seg(browser, done.path, database=database)
    np.testing.assert_array_equal(logic.label_arrays(browser, back)[0], logic.label_arrays(browser, result)[0])

    missing = FakeDicomDatabase([phantom_dir / "IM7.dcm"])
    with pytest.raises(InputError, match=rf"no file for SOP Instance UID {uid} \(frame 0\)"):
        dicom_export.dicom_source(cine, missing)


def _single_frame_instances(source: Path, folder: Path, order: list[int]) -> list[Path]:
    """Single-frame XA instances of the source's frames (InstanceNumber t + 1), files named out of order."""
    pixels = read_cine(source).to_array()
    folder.mkdir()
    paths = []
    for k, t in enumerate(order):
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        ds.remove_private_tags()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        del ds.NumberOfFrames, ds.FrameIncrementPointer
        ds.InstanceNumber = t + 1
        ds.PixelData = np.ascontiguousarray(pixels[t]).tobytes()
        ds["PixelData"].VR = "OB"
        path = folder / f"f{k:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return [paths[order.index(t)] for t in range(len(order))]  # in frame order


def test_single_frame_instances_from_the_database_are_referenced_in_cine_order(logic, phantom_dir: Path,
                                                                                tmp_path: Path):
    from xrayvos_slicer import dicom_export, results
    from xrayvos_slicer import segments as S

    files = _single_frame_instances(phantom_dir / "IM4.dcm", tmp_path / "db", [3, 0, 8, 5, 1, 9, 2, 7, 4, 6])
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    database = FakeDicomDatabase(files)
    browser = _as_dicom_module_loads(logic, files, uids, "cine-MRI-like")
    cine = browser.GetMasterSequenceNode()
    found = dicom_export.dicom_source(cine, database)
    assert found.path is None and found.instances == tuple(files)
    labels = np.stack([np.roll(_drawn(512, 512), 4 * t, axis=0) for t in range(len(files))])
    infos = [S.new_info(f"Segment_{k}", name, None, k) for k, name in enumerate(("LAD", "guide wire", "stent"))]
    result = results.write_sequence(logic.scene, browser, cine, labels, infos, {}, {"XRayVOS.Method": "flow"})
    done = logic.export_dicom_seg(browser, result, tmp_path / "frames_seg.dcm", database=database)
    refs = [g.DerivationImageSequence[0].SourceImageSequence[0] for g in pydicom.dcmread(done.path)
            .PerFrameFunctionalGroupsSequence]
    assert {r.ReferencedSOPInstanceUID for r in refs} == set(uids) and not any("ReferencedFrameNumber" in r
                                                                                for r in refs)
    back = logic.load_dicom_seg(browser, done.path, database=database)
    back_labels, back_names = logic.label_arrays(browser, back)
    np.testing.assert_array_equal(back_labels, labels)
    assert back_names == ["LAD", "guide wire", "stent"]

    swapped = uids[:]  # a cine whose frames play in another order than the instances' InstanceNumber
    swapped[0], swapped[1] = swapped[1], swapped[0]
    other = _as_dicom_module_loads(logic, [files[1], files[0], *files[2:]], swapped, "swapped")
    with pytest.raises(InputError, match=r"order differs from the cine's 10 frames at frame 0"):
        logic.load_dicom_seg(other, done.path, database=database)


def test_a_cine_without_dicom_is_refused_with_one_line_naming_it(logic, add_cine, synthetic_cine, tmp_path: Path):
    browser = add_cine(synthetic_cine, "painted synthetic")
    support = logic.set_support(browser, 0, synthetic_cine.labels[0], names=dict(synthetic_cine.object_names))
    logic.propagate(browser, support, RunSettings(method="copy"))
    with pytest.raises(InputError) as caught:
        logic.export_dicom_seg(browser, support, tmp_path / "x.dcm")
    assert "'painted synthetic' has no DICOM source" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "x.dcm").exists()

    npy = tmp_path / "cine.npy"
    np.save(npy, synthetic_cine.frames)
    loaded = logic.load_cine(npy)
    with pytest.raises(InputError, match=rf"loaded from {re.escape(str(npy.resolve()))} \(npy\), not from DICOM"):
        logic.load_dicom_seg(loaded, tmp_path / "x.dcm")


def test_no_result_and_a_seg_of_another_cine_are_refused(logic, phantom_dir: Path, tmp_path: Path):
    browser = logic.load_cine(phantom_dir / "IM7.dcm")
    support = logic.set_support(browser, 0, _drawn(512, 512))
    with pytest.raises(ValueError, match="has no XRayVOS result yet: Propagate first"):
        logic.export_dicom_seg(browser, support, tmp_path / "none.dcm")
    other = tmp_path / "im8_seg.dcm"
    write_dicom_seg(np.stack([_drawn(512, 512)] * read_cine(phantom_dir / "IM8.dcm").num_frames),
                    phantom_dir / "IM8.dcm", other, supports=[0])
    with pytest.raises(InputError) as caught:
        logic.load_dicom_seg(browser, other)
    message = str(caught.value)
    assert "im8_seg.dcm" in message and "IM7.dcm" in message and "another cine" in message and "\n" not in message
    assert logic.scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == 2  # the cine and its support: nothing added


def test_seg_packages_are_installed_without_torch_at_the_versions_the_library_needs():
    import tomllib

    from xrayvos_slicer import dependencies as D

    steps = D.install_steps(D.READER_REQUIREMENTS + D.SEG_REQUIREMENTS, needs_torch=False)
    assert [step.kind for step in steps] == ["pip"]
    wanted = set(steps[0].requirements)
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {r.split("#")[0].strip() for r in project["project"]["dependencies"]}
    assert {"highdicom>=0.28", "pydicom>=3.0", "pylibjpeg-libjpeg>=2.1"} <= wanted <= declared
