"""Saving the scene to .mrb and loading it back finds the cine, support and result sequences, synchronised."""

from __future__ import annotations

import numpy as np
import pytest

from XRayVOSLib.settings import RunSettings

# fixtures from conftest.py: mrml, logic, synthetic_cine

pytestmark = pytest.mark.slicer


def _by_role(scene) -> dict:
    out = {}
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
        out[node.GetAttribute("XRayVOS.Role")] = node
    return out


def test_mrb_roundtrip_keeps_sequences_and_synchronisation(logic, synthetic_cine, painted, mrml_factory, tmp_path):
    from xrayvos_slicer.logic import XRayVOSLogic
    from xrayvos_slicer.sequences import CINE_REFERENCE, SUPPORT_REFERENCE

    cine = synthetic_cine
    browser, support = painted(cine, frames=(0, 11))
    result = logic.propagate(browser, support, RunSettings(method="flow"))
    expected_result, names = logic.label_arrays(browser, result)
    expected_support, _ = logic.label_arrays(browser, support)

    path = tmp_path / "xrayvos.mrb"
    assert logic.scene.WriteToMRB(str(path))
    assert path.stat().st_size > 0

    reloaded = mrml_factory()  # a fresh scene, as after restarting Slicer
    assert reloaded.scene.ReadFromMRB(str(path))
    nodes = _by_role(reloaded.scene)
    assert set(nodes) == {"cine", "support", "result"}
    cine_sequence, support_sequence, result_sequence = nodes["cine"], nodes["support"], nodes["result"]
    assert cine_sequence.GetNumberOfDataNodes() == 12
    assert cine_sequence.GetIndexName() == "time"
    assert [cine_sequence.GetNthIndexValue(i) for i in range(3)] == ["0.000", "0.067", "0.133"]
    assert result_sequence.GetNodeReference(SUPPORT_REFERENCE) is support_sequence
    assert support_sequence.GetNodeReference(CINE_REFERENCE) is cine_sequence

    browser2 = reloaded.scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
    assert browser2.GetMasterSequenceNode() is cine_sequence
    for sequence in (support_sequence, result_sequence):
        assert browser2.IsSynchronizedSequenceNodeID(sequence.GetID(), False)
    assert browser2.GetSaveChanges(support_sequence)  # painting after reload is still recorded

    logic2 = XRayVOSLogic(reloaded.scene)
    np.testing.assert_array_equal(logic2.cine_frames(browser2), cine.frames)
    labels, names2 = logic2.label_arrays(browser2, result_sequence)
    np.testing.assert_array_equal(labels, expected_result)
    assert names2 == names
    np.testing.assert_array_equal(logic2.label_arrays(browser2, support_sequence)[0], expected_support)
    proxy = browser2.GetProxyNode(support_sequence)
    assert logic2.support_frames(browser2, proxy) == [0, 11]
    assert logic2.result_sequence(browser2, proxy) is result_sequence  # a re-run would replace it
