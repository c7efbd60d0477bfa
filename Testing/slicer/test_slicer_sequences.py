"""Cine <-> volume sequence on a real MRML scene (slicer-core): the XA phantom DICOMs and synthetic cines."""

from __future__ import annotations

import numpy as np
import pytest
import vtk

# fixtures from conftest.py: mrml, logic, synthetic_cine

pytestmark = pytest.mark.slicer

PHANTOM_FRAMES = {"IM1": 14, "IM2": 12, "IM3": 12, "IM4": 10, "IM5": 16, "IM6": 9, "IM7": 9, "IM8": 8}


@pytest.mark.parametrize("name", sorted(PHANTOM_FRAMES))
def test_phantom_dicom_loads_as_volume_sequence(logic, phantom_dir, name):
    from XRayVOSLib.io import read_cine

    path = phantom_dir / f"{name}.dcm"
    browser = logic.load_cine(path)
    sequence = browser.GetMasterSequenceNode()
    assert sequence.GetNumberOfDataNodes() == PHANTOM_FRAMES[name]
    assert logic.scene.GetNodeByID(sequence.GetID()) is sequence

    # Spacing: 0.39 mm where the DICOM carries ImagerPixelSpacing (IM5-IM8), 1 mm where it carries none.
    spacing = sequence.GetNthDataNode(0).GetSpacing()
    expected = 0.390625 if name in ("IM5", "IM6", "IM7", "IM8") else 1.0
    assert spacing[:2] == pytest.approx((expected, expected))

    # Index: frame times in seconds, 3 decimals (as Slicer's DICOM image-sequence loader); 15 fps.
    cine = read_cine(path)
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "s")
    values = [sequence.GetNthIndexValue(i) for i in range(sequence.GetNumberOfDataNodes())]
    assert values == [f"{t:.3f}" for t in cine.frame_times]
    assert values[:3] == ["0.000", "0.067", "0.133"]
    assert browser.GetPlaybackRateFps() == pytest.approx(15.0, rel=0.01)

    # Pixels are the decoded frames, unchanged, row 0 at the top (IJK-to-RAS diag(-1, -1, 1) directions).
    np.testing.assert_array_equal(logic.cine_frames(browser), cine.to_array())
    matrix = vtk.vtkMatrix4x4()
    sequence.GetNthDataNode(0).GetIJKToRASDirectionMatrix(matrix)
    assert [matrix.GetElement(i, i) for i in range(3)] == [-1.0, -1.0, 1.0]
    assert sequence.GetAttribute("XRayVOS.SourceKind") == "dicom-multiframe"

    # The browser's proxy shows the selected frame.
    browser.SetSelectedItemNumber(3)
    from xrayvos_slicer.sequences import frame_array

    np.testing.assert_array_equal(frame_array(browser.GetProxyNode(sequence)), cine.to_array()[3])


def test_synthetic_cine_roundtrip_and_resolution(logic, synthetic_cine, add_cine):
    cine = synthetic_cine
    browser = add_cine(cine)
    sequence = browser.GetMasterSequenceNode()
    np.testing.assert_array_equal(logic.cine_frames(sequence), cine.frames)
    assert sequence.GetNthDataNode(0).GetSpacing()[:2] == pytest.approx((cine.spacing[1], cine.spacing[0]))
    # Any of browser, sequence or proxy volume names the same cine.
    proxy = browser.GetProxyNode(sequence)
    for node in (browser, sequence, proxy):
        assert logic.resolve_cine(node) == (browser, sequence)


def test_untimed_cine_is_indexed_by_frame_number(logic, synthetic_cine):
    browser = logic.add_cine(synthetic_cine.frames[:4], None, None, "untimed")
    sequence = browser.GetMasterSequenceNode()
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("frame", "")
    assert [sequence.GetNthIndexValue(i) for i in range(4)] == ["0", "1", "2", "3"]
    assert sequence.GetNthDataNode(0).GetSpacing() == pytest.approx((1.0, 1.0, 1.0))


def test_bare_sequence_gets_a_browser_and_short_cines_are_refused(logic, synthetic_cine):
    from xrayvos_slicer import sequences

    browser = logic.add_cine(synthetic_cine.frames[:1], None, None, "one frame")
    with pytest.raises(ValueError, match="needs at least 2"):
        logic.resolve_cine(browser)
    sequence = sequences.new_sequence_like(browser.GetMasterSequenceNode(), "bare")
    for t in range(3):
        sequence.SetDataNodeAtValue(sequences.frame_volume(synthetic_cine.frames[t], sequences.frame_ijk_to_ras(None)),
                                    str(t))
    logic.scene.AddNode(sequence)
    made, same = logic.resolve_cine(sequence)
    assert same is sequence and made.GetMasterSequenceNode() is sequence
    assert logic.resolve_cine(sequence)[0] is made  # found again, not duplicated
