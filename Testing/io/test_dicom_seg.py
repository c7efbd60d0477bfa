"""DICOM SEG (XRayVOSLib/seg): written on the real XA phantom cines, read back exactly, checked by dciodvfy,
dcmdump and highdicom, refused for another cine; `xrayvos export-seg` on a real propagate output.

dciodvfy (Debian dicom3tools) and dcmdump (Debian dcmtk) are installed by .ci/run; where absent the checks
that need them skip with the reason, except under CI=true, where they fail (as the shared_dir fixture does).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage, generate_uid

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.io import read_cine, read_mask, write_mask
from XRayVOSLib.methods import make_method
from XRayVOSLib.seg import SegmentSpec, algorithm_for_run, read_dicom_seg, write_dicom_seg
from XRayVOSLib.seg.write import COMPUTED_DESCRIPTION, MANUAL_DESCRIPTION
from XRayVOSLib.settings import RunSettings

PHANTOMS = ("IM1", "IM2", "IM3", "IM4", "IM5", "IM6", "IM7", "IM8")
NAMES = {1: "LAD", 3: "guide wire", 7: SegmentSpec("device 7", "stent")}
KIND_CODES = {"artery": ("91723000", "41801008"), "catheter": ("260787004", "19923001"),
              "guidewire": ("260787004", "272224001"), "balloon": ("260787004", "102319006"),
              "stent": ("260787004", "65818007"), "object": ("260787004", "260787004")}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed under CI=true (.ci/run installs dicom3tools and dcmtk)")
        pytest.skip(f"{name} is not installed (apt-get install dicom3tools dcmtk)")
    return path


def drawn_labels(num_frames: int, height: int, width: int) -> np.ndarray:
    """Objects 1 (a moving disc), 3 (a line) and 7 (a block on even frames only): ids kept non-contiguous."""
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        labels[t][(yy - 180 - 4 * t) ** 2 + (xx - 250) ** 2 < 45**2] = 1
        labels[t][(np.abs(yy - xx + 2 * t) < 3) & (yy > 60) & (yy < 420)] = 3
        if t % 2 == 0:
            labels[t][300 + t : 350 + t, 60:95] = 7
    return labels


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dciodvfy reports for the file."""
    done = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


@pytest.fixture(scope="module")
def written(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """A SEG of drawn labels on every phantom cine, supports at frames 0 and T // 2."""
    out = tmp_path_factory.mktemp("seg")
    result = {}
    for name in PHANTOMS:
        frames, height, width = read_cine(phantom_dir / f"{name}.dcm").shape
        labels = drawn_labels(frames, height, width)
        path = write_dicom_seg(labels, phantom_dir / f"{name}.dcm", out / f"{name}_seg.dcm", segments=NAMES,
                               supports=[0, frames // 2], algorithm=algorithm_for_run("local", None))
        result[name] = (path, labels)
    return result


@pytest.mark.parametrize("name", PHANTOMS)
def test_round_trip_on_every_phantom(phantom_dir: Path, written: dict, name: str) -> None:
    path, labels = written[name]
    seg = read_dicom_seg(path, phantom_dir / f"{name}.dcm")
    assert seg.labels.dtype == np.uint8 and seg.labels.shape == labels.shape
    np.testing.assert_array_equal(seg.labels, labels)
    assert seg.objects == {1: "LAD", 3: "guide wire", 7: "device 7"}
    assert seg.kinds == {1: "artery", 3: "guidewire", 7: "stent"}
    assert seg.supports == (0, len(labels) // 2)
    assert seg.source_uids == (pydicom.dcmread(phantom_dir / f"{name}.dcm", stop_before_pixels=True).SOPInstanceUID,)


@pytest.mark.parametrize("name", PHANTOMS)
def test_highdicom_reads_frames_referencing_the_source(phantom_dir: Path, written: dict, name: str) -> None:
    path, labels = written[name]
    source = pydicom.dcmread(phantom_dir / f"{name}.dcm", stop_before_pixels=True)
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == SegmentationStorage and seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.get_source_image_uids() == [(source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)]
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID and seg.SOPInstanceUID != source.SOPInstanceUID
    assert (seg.PatientID, seg.PatientName, seg.StudyInstanceUID) == (source.PatientID, source.PatientName,
                                                                      source.StudyInstanceUID)
    assert seg.ContributingEquipmentSequence[0].Manufacturer == source.Manufacturer
    ids = {1: 1, 2: 3, 3: 7}  # segment number -> object id (sorted ids)
    expected_frames = sum(int((labels[t] == i).any()) for t in range(len(labels)) for i in ids.values())
    assert seg.NumberOfFrames == expected_frames
    for k, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = group.DerivationImageSequence[0].SourceImageSequence[0]
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        t = int(ref.ReferencedFrameNumber) - 1
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID and 0 <= t < int(source.NumberOfFrames)
        assert list(group.FrameContentSequence[0].DimensionIndexValues) == [number, t + 1]
        # Each stored frame, decoded by highdicom alone, is that object on that source frame.
        np.testing.assert_array_equal(seg.get_stored_frame(k + 1), labels[t] == ids[number])
        painted = t in (0, len(labels) // 2)
        assert group.DerivationImageSequence[0].DerivationDescription == (
            MANUAL_DESCRIPTION if painted else COMPUTED_DESCRIPTION)


@pytest.mark.parametrize("name", PHANTOMS)
def test_dciodvfy_finds_no_error(written: dict, name: str) -> None:
    errors, warnings = dciodvfy(written[name][0])
    assert errors == [] and warnings == []


def test_dcmdump_reads_it(written: dict) -> None:
    done = subprocess.run([tool("dcmdump"), "+P", "0008,0016", "+P", "0028,0008", "+P", "0062,0005",
                           str(written["IM5"][0])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "E:" not in done.stderr, done.stderr
    assert "=SegmentationStorage" in done.stdout and "[LAD]" in done.stdout and "[guide wire]" in done.stdout


def test_segments_carry_codes_colours_and_the_algorithm(written: dict) -> None:
    seg = pydicom.dcmread(written["IM1"][0])
    by_label = {item.SegmentLabel: item for item in seg.SegmentSequence}
    for label, kind in (("LAD", "artery"), ("guide wire", "guidewire"), ("device 7", "stent")):
        item = by_label[label]
        codes = (item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0])
        assert all(c.CodingSchemeDesignator == "SCT" for c in codes)
        assert (codes[0].CodeValue, codes[1].CodeValue) == KIND_CODES[kind]
        assert item.SegmentAlgorithmType == "SEMIAUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "XRayVOS" and algorithm.AlgorithmVersion == "0.1.0"
        assert "support_frames=0 7" in algorithm.AlgorithmParameters  # IM1: 14 frames
    rgb = hd.color.CIELabColor.from_dicom_value(by_label["LAD"].RecommendedDisplayCIELabValue).to_rgb()
    assert np.allclose(rgb, (128, 0, 0), atol=2)  # DAVIS palette colour of id 1


def test_every_kind_gets_its_snomed_codes(phantom_dir: Path, tmp_path: Path) -> None:
    source = phantom_dir / "IM8.dcm"
    frames, height, width = read_cine(source).shape
    labels = np.zeros((frames, height, width), np.uint8)
    names = {1: "RCA", 2: "JL4 catheter", 3: "guidewire", 4: "balloon", 5: "stent", 6: "marker"}
    for i in names:
        labels[:, 40 * i : 40 * i + 20, 100:200] = i
    seg = read_dicom_seg(write_dicom_seg(labels, source, tmp_path / "kinds.dcm", segments=names), source)
    assert seg.kinds == dict(zip(names, ("artery", "catheter", "guidewire", "balloon", "stent", "object")))
    items = pydicom.dcmread(tmp_path / "kinds.dcm").SegmentSequence
    for item, kind in zip(items, seg.kinds.values()):
        assert (item.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                item.SegmentedPropertyTypeCodeSequence[0].CodeValue) == KIND_CODES[kind]
        assert item.SegmentAlgorithmType == "AUTOMATIC"  # no support given


def test_flow_propagation_round_trip(phantom_dir: Path, tmp_path: Path) -> None:
    """Labels made by the real `flow` method from one painted frame; model hash recorded where a model is."""
    source = phantom_dir / "IM5.dcm"
    cine = read_cine(source)
    support = drawn_labels(*cine.shape)[0]
    labels = make_method(RunSettings(method="flow")).propagate(cine.frames, {0: support})
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    algorithm = algorithm_for_run("flow", model, RunSettings(method="flow").to_dict())
    path = write_dicom_seg(labels, source, tmp_path / "flow.dcm", supports=[0], algorithm=algorithm)
    seg = read_dicom_seg(path, source)
    np.testing.assert_array_equal(seg.labels, labels)
    assert seg.objects == {1: "object 1", 3: "object 3", 7: "object 7"} and seg.supports == (0,)
    params = pydicom.dcmread(path).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "method=flow" in params.AlgorithmParameters and "model=model.safetensors" in params.AlgorithmParameters
    assert f"model_sha256={hashlib.sha256(b'weights').hexdigest()}" in params.AlgorithmParameters
    assert dciodvfy(path)[0] == []


def test_seg_of_another_cine_is_refused(phantom_dir: Path, written: dict) -> None:
    with pytest.raises(InputError) as caught:
        read_dicom_seg(written["IM1"][0], phantom_dir / "IM2.dcm")
    message = str(caught.value)
    assert "IM1_seg.dcm" in message and "IM2.dcm" in message and "another cine" in message
    assert "\n" not in message


def _xa_copy(source: Path, frames: np.ndarray, path: Path, instance: int | None = None) -> Path:
    """An XA file with the phantom's patient/study/series and `frames` uncompressed (one frame if `instance`)."""
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    ds.remove_private_tags()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = frames.shape[-2:]
    if instance is None:
        ds.NumberOfFrames = len(frames)
    else:
        del ds.NumberOfFrames, ds.FrameIncrementPointer
        ds.InstanceNumber = instance
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds["PixelData"].VR = "OB"  # 8-bit pixels
    ds.save_as(path, enforce_file_format=True)
    return path


def test_folder_of_single_frame_instances(phantom_dir: Path, tmp_path: Path) -> None:
    pixels = read_cine(phantom_dir / "IM4.dcm").to_array()
    folder = tmp_path / "frames"
    folder.mkdir()
    order = [3, 0, 8, 5, 1, 9, 2, 7, 4, 6]  # file names do not follow InstanceNumber
    for k, t in enumerate(order):
        _xa_copy(phantom_dir / "IM4.dcm", pixels[t], folder / f"f{k:02d}.dcm", instance=t + 1)
    cine = read_cine(folder)
    assert cine.source_kind == "dicom-folder" and np.array_equal(cine.to_array(), pixels)
    labels = drawn_labels(*cine.shape)
    path = write_dicom_seg(iter([(t, labels[t]) for t in reversed(range(len(labels)))]), folder,
                           tmp_path / "folder_seg.dcm", segments=NAMES, supports=[2])
    seg = read_dicom_seg(path, folder)
    np.testing.assert_array_equal(seg.labels, labels)
    assert seg.supports == (2,) and seg.objects[1] == "LAD"
    uids = [pydicom.dcmread(folder / name, stop_before_pixels=True).SOPInstanceUID for name in cine.tags["files"]]
    for group in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence:
        ref = group.DerivationImageSequence[0].SourceImageSequence[0]
        t = group.FrameContentSequence[0].DimensionIndexValues[1] - 1
        assert ref.ReferencedSOPInstanceUID == uids[t] and "ReferencedFrameNumber" not in ref
    assert dciodvfy(path)[0] == []


def test_frames_not_a_multiple_of_8_pixels(phantom_dir: Path, tmp_path: Path) -> None:
    """509 x 511 frames start mid-byte in a BINARY SEG (PS3.5 8.1.1): the bit carry between frames."""
    pixels = read_cine(phantom_dir / "IM6.dcm").to_array()[:, :509, :511]
    source = _xa_copy(phantom_dir / "IM6.dcm", pixels, tmp_path / "odd.dcm")
    labels = drawn_labels(*pixels.shape)
    path = write_dicom_seg(labels, source, tmp_path / "odd_seg.dcm")
    np.testing.assert_array_equal(read_dicom_seg(path, source).labels, labels)
    seg = hd.seg.segread(path)
    np.testing.assert_array_equal(seg.get_stored_frame(2), labels[1] == 1)  # frame 2 starts at bit 509 * 511
    assert dciodvfy(path)[0] == []


def test_labels_read_once_frame_by_frame(phantom_dir: Path, tmp_path: Path) -> None:
    """The writer asks for each frame once and never for the whole stack (no np.asarray of the cine)."""
    source = phantom_dir / "IM7.dcm"
    labels = drawn_labels(*read_cine(source).shape)
    reads: list[int] = []

    class OneFrameAtATime:  # no __array__, and any index but one frame's fails loudly
        shape = labels.shape

        def __getitem__(self, t: int) -> np.ndarray:
            assert isinstance(t, int), f"asked for {t!r}, not one frame"
            reads.append(t)
            return labels[t]

    path = write_dicom_seg(OneFrameAtATime(), source, tmp_path / "lazy.dcm")
    assert reads == list(range(len(labels)))
    np.testing.assert_array_equal(read_dicom_seg(path, source).labels, labels)


def test_failed_write_keeps_the_old_file(phantom_dir: Path, tmp_path: Path) -> None:
    source = phantom_dir / "IM8.dcm"
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"old")
    empty = np.zeros(read_cine(source).shape, np.uint8)
    with pytest.raises(InputError, match="every frame of the segmentation is empty"):
        write_dicom_seg(empty, source, out)
    with pytest.raises(InputError, match="frames"):
        write_dicom_seg(empty[:3], source, out)
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]


def test_non_dicom_source_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "cine.npy", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(InputError, match="references DICOM images"):
        write_dicom_seg(np.ones((3, 16, 16), np.uint8), tmp_path / "cine.npy", tmp_path / "seg.dcm")


def test_cli_export_seg_of_a_propagate_run(phantom_dir: Path, tmp_path: Path) -> None:
    source = phantom_dir / "IM6.dcm"
    write_mask(tmp_path / "f0.png", drawn_labels(*read_cine(source).shape)[0])
    run = [sys.executable, "-m", "XRayVOSLib"]
    done = subprocess.run([*run, "propagate", str(source), "--support", f"0:{tmp_path / 'f0.png'}", "--out",
                           str(tmp_path / "pred"), "--method", "flow", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*run, "export-seg", str(tmp_path / "pred"), "--source", str(source), "--out",
                           str(tmp_path / "run_seg.dcm"), "--name", "1=LAD", "--name", "7=JR4:catheter"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seg = read_dicom_seg(tmp_path / "run_seg.dcm", source)
    pngs = np.stack([read_mask(p) for p in sorted((tmp_path / "pred").glob("*.png"))])
    np.testing.assert_array_equal(seg.labels, pngs)
    assert seg.objects == {1: "LAD", 3: "object 3", 7: "JR4"} and seg.kinds[7] == "catheter" and seg.supports == (0,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.png", "pred", "run_seg.dcm"]  # no temp left


def test_propagate_dicom_seg_writes_the_result_and_refuses_other_inputs(phantom_dir: Path, tmp_path: Path) -> None:
    """`propagate --dicom-seg` writes the same labels as the PNGs; a non-DICOM input fails before any output."""
    source = phantom_dir / "IM2.dcm"
    write_mask(tmp_path / "f0.png", drawn_labels(*read_cine(source).shape)[0])
    run = [sys.executable, "-m", "XRayVOSLib", "propagate", "--support", f"0:{tmp_path / 'f0.png'}", "--method",
           "flow", "--quiet"]
    done = subprocess.run([*run, str(source), "--out", str(tmp_path / "pred"), "--dicom-seg",
                           str(tmp_path / "seg.dcm")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seg = read_dicom_seg(tmp_path / "seg.dcm", source)
    pngs = np.stack([read_mask(p) for p in sorted((tmp_path / "pred").glob("*.png"))])
    np.testing.assert_array_equal(seg.labels, pngs)
    assert seg.supports == (0,)
    np.save(tmp_path / "cine.npy", read_cine(source).frames[:])
    done = subprocess.run([*run, str(tmp_path / "cine.npy"), "--out", str(tmp_path / "npy_pred"), "--dicom-seg",
                           str(tmp_path / "npy_seg.dcm")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "needs a DICOM input" in done.stderr
    assert not (tmp_path / "npy_pred").exists() and not (tmp_path / "npy_seg.dcm").exists()


@pytest.mark.parametrize("problem", ["no-run-json", "bad-name", "unknown-object", "png-source", "wrong-cine",
                                     "missing-png", "out-is-a-folder"])
def test_cli_bad_input_is_one_line_exit_2(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          problem: str) -> None:
    pred = tmp_path / "pred"
    frames = drawn_labels(8, 512, 512)
    for t, labels in enumerate(frames):
        write_mask(pred / f"{t:05d}.png", labels)
    run_json = ('{"input": "%s", "frames": 8, "height": 512, "width": 512, "objects": [1, 3, 7], '
                '"supports": [{"frame": 0}], "model": null, "settings": {"method": "flow"}}')
    (pred / "run.json").write_text(run_json % (phantom_dir / "IM8.dcm"))
    args = ["export-seg", str(pred), "--out", str(tmp_path / "seg.dcm")]
    if problem == "no-run-json":
        (pred / "run.json").unlink()
    elif problem == "bad-name":
        args += ["--name", "LAD"]
    elif problem == "unknown-object":
        args += ["--name", "5=LAD"]
    elif problem == "png-source":
        args += ["--source", str(pred)]
    elif problem == "wrong-cine":
        args += ["--source", str(phantom_dir / "IM1.dcm")]
    elif problem == "missing-png":
        (pred / "00004.png").unlink()
    else:
        args[-1] = str(pred)
    assert main(args) == 2
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("xrayvos export-seg: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    if problem in ("png-source", "wrong-cine"):  # a warning says the run was computed on another input
        assert lines[0].startswith("xrayvos export-seg: warning: ") and "IM8.dcm" in lines[0] and len(lines) == 2
    else:
        assert len(lines) == 1, lines
    assert not (tmp_path / "seg.dcm").exists()
    if problem in ("bad-name", "unknown-object", "png-source", "wrong-cine"):  # the same run without the problem
        assert main(args[:4]) == 0 and (tmp_path / "seg.dcm").is_file()


def test_names_give_kinds_and_the_cli_form_parses() -> None:
    from XRayVOSLib.seg import kind_from_name
    from XRayVOSLib.seg.terms import parse_segment

    assert [kind_from_name(n) for n in ("LAD", "proximal RCA", "JR4 catheter", "guide wire", "balloon catheter",
                                        "DES stent", "marker")] == [
        "artery", "artery", "catheter", "guidewire", "balloon", "stent", "object"]
    assert parse_segment("7=JR4:catheter") == (7, SegmentSpec("JR4", "catheter"))
    assert parse_segment("2=LAD: proximal") == (2, SegmentSpec("LAD: proximal", ""))  # no kind after the colon
    with pytest.raises(InputError, match="ID=NAME"):
        parse_segment("LAD")
    with pytest.raises(InputError, match="kind 'vein'"):
        SegmentSpec("x", "vein").resolved(1)
