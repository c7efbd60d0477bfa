"""Propagation through the real background worker process, and the result sequence written back."""

from __future__ import annotations

import numpy as np
import pytest
import vtk

from XRayVOSLib.settings import RunSettings

# fixtures from conftest.py: mrml, logic, synthetic_cine

pytestmark = pytest.mark.slicer

TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
               "~SCT^85756007^Tissue~SCT^85756007^Blood vessel~^^~Anatomic codes~^^~")


def _item_arrays(item, volume, ids):
    from xrayvos_slicer import segments as S

    return {sid: S.labelmap(item, volume, [sid]) for sid in ids}


def _tag(segment, key: str) -> str:
    value = vtk.reference("")
    segment.GetTag(key, value)
    return str(value)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_flow_propagation_writes_a_synchronised_result(logic, synthetic_cine, painted):
    from xrayvos_slicer import segments as S
    from xrayvos_slicer.sequences import SUPPORT_REFERENCE

    cine = synthetic_cine
    browser, support = painted(cine, frames=(0, 11))
    support_sequence = logic.support_sequence(browser, support)
    first_id = S.segment_ids(support)[0]
    support.GetSegmentation().GetSegment(first_id).SetTag("TerminologyEntry", TERMINOLOGY)  # recorded at frame 11
    support_before, _ = logic.label_arrays(browser, support)

    seen = []
    flow = RunSettings(method="flow", decision="threshold", threshold=0.3)
    result = logic.propagate(browser, support, flow, progress=lambda d, n: seen.append((d, n)))
    volume_sequence = browser.GetMasterSequenceNode()
    T = volume_sequence.GetNumberOfDataNodes()
    assert seen and seen[-1][0] <= seen[-1][1]
    assert result.GetNumberOfDataNodes() == T
    assert browser.IsSynchronizedSequenceNodeID(result.GetID(), False)
    assert [result.GetNthIndexValue(t) for t in range(T)] == [volume_sequence.GetNthIndexValue(t) for t in range(T)]
    # The settings are recorded on the result.
    assert {key: result.GetAttribute(f"XRayVOS.{key}") for key in ("Method", "Model", "Device", "Window",
                                                                   "MemoryEvery", "Decision", "Threshold")} == {
        "Method": "flow", "Model": "bundled", "Device": "auto", "Window": "15", "MemoryEvery": "6",
        "Decision": "threshold", "Threshold": "0.3"}
    assert float(result.GetAttribute("XRayVOS.TemporalBlend")) == flow.temporal_blend
    assert float(result.GetAttribute("XRayVOS.SupportWarp")) == flow.support_warp
    assert float(result.GetAttribute("XRayVOS.Seconds")) > 0
    assert result.GetNodeReference(SUPPORT_REFERENCE) is support_sequence

    ids = S.segment_ids(support)
    for t in range(T):
        item, volume = result.GetNthDataNode(t), volume_sequence.GetNthDataNode(t)
        assert S.segment_ids(item) == ids
        for sid in ids:  # names, colours (and terminology where painted) kept on every frame
            source = support.GetSegmentation().GetSegment(sid)
            assert item.GetSegmentation().GetSegment(sid).GetName() == source.GetName()
            assert item.GetSegmentation().GetSegment(sid).GetColor() == pytest.approx(source.GetColor())
        # Reference geometry of every item = its own frame's geometry.
        expected = S.slicer.vtkSegmentationConverter.SerializeImageGeometry(S.frame_geometry(volume))
        assert item.GetSegmentation().GetConversionParameter("Reference image geometry") == expected
    for t in (5, 11):  # terminology: on the painted frame and on predicted ones
        assert _tag(result.GetNthDataNode(t).GetSegmentation().GetSegment(first_id), "TerminologyEntry") == TERMINOLOGY

    # Support frames: bit-identical to what was painted, segment by segment.
    for t in (0, 11):
        volume = volume_sequence.GetNthDataNode(t)
        painted = _item_arrays(support_sequence.GetNthDataNode(t), volume, ids)
        written = _item_arrays(result.GetNthDataNode(t), volume, ids)
        for sid in ids:
            np.testing.assert_array_equal(written[sid], painted[sid])

    labels, names = logic.label_arrays(browser, result)
    assert names == [cine.object_names[k] for k in sorted(cine.object_names)]
    np.testing.assert_array_equal(labels[[0, 11]], cine.labels[[0, 11]])
    assert np.mean([_dice(labels[t], cine.labels[t]) for t in range(1, 11)]) > 0.6  # flow tracks the objects

    # The proxy shows the result at the current frame and is marked so it cannot be picked as a support.
    browser.SetSelectedItemNumber(5)
    proxy = browser.GetProxyNode(result)
    np.testing.assert_array_equal(S.labelmap(proxy, browser.GetProxyNode(volume_sequence), ids), labels[5])
    assert proxy.GetAttribute("XRayVOS.Role") == "result"
    with pytest.raises(ValueError, match="XRayVOS result"):
        logic.support_sequence(browser, proxy)

    # Re-running replaces only the earlier result: same node, support untouched.
    logic.set_support(browser, 6, cine.labels[6], support=support, names=dict(cine.object_names))
    again = logic.propagate(browser, support, RunSettings(method="copy"))
    assert again is result and result.GetAttribute("XRayVOS.Method") == "copy"
    # An area-prior run has no threshold: the earlier run's attribute goes with it.
    assert result.GetAttribute("XRayVOS.Decision") == "area-prior" and result.GetAttribute("XRayVOS.Threshold") is None
    roles = [logic.scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode").GetAttribute("XRayVOS.Role")
             for i in range(logic.scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode"))]
    assert sorted(r or "" for r in roles) == ["cine", "result", "support"]
    support_after, _ = logic.label_arrays(browser, support)
    np.testing.assert_array_equal(np.delete(support_after, 6, axis=0), np.delete(support_before, 6, axis=0))
    relabelled, _ = logic.label_arrays(browser, result)
    np.testing.assert_array_equal(relabelled[6], cine.labels[6])
    np.testing.assert_array_equal(relabelled[5], cine.labels[6])  # copy: nearest support frame


@pytest.mark.slow
def test_local_network_propagation_small_cine(logic, painted):
    """The network method through the real worker (untrained weights if models/ is empty): 8 frames 128x128.
    No settings: the bundled model's own (RunSettings.from_model(None)), recorded on the result."""
    pytest.importorskip("torch")
    from XRayVOSLib.synth import generate_cine

    cine = generate_cine(seed=5, num_frames=8, size=128)
    browser, support = painted(cine, frames=(0,))
    run = logic.start(browser, support)
    while logic.poll(run) == "running":
        run.worker.wait(0.2)
    assert run.state == "done", run.error
    assert run.done == run.total == 7
    labels, _ = logic.label_arrays(browser, run.result)
    assert labels.shape == cine.labels.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[0], cine.labels[0])
    assert set(np.unique(labels)) <= set(np.unique(cine.labels[0]))
    own = RunSettings.from_model(None)
    assert run.settings == own and run.model is None
    attributes = {key: run.result.GetAttribute(f"XRayVOS.{key}") for key in ("Method", "Window", "MemoryEvery",
                                                                             "Decision", "TemporalBlend")}
    assert attributes == {"Method": own.method, "Window": str(own.window), "MemoryEvery": str(own.memory_every),
                          "Decision": own.decision, "TemporalBlend": str(own.temporal_blend)}
    assert (run.result.GetAttribute("XRayVOS.Threshold") is None) == (own.decision == "area-prior")
    assert not run.work_dir.exists()


def test_use_current_frame_seeds_a_support_from_the_result(logic, synthetic_cine, painted):
    cine = synthetic_cine
    browser, support = painted(cine, frames=(0,))
    with pytest.raises(ValueError, match="nothing painted"):
        logic.use_frame_as_support(browser, support, 4)
    result = logic.propagate(browser, support, RunSettings(method="copy"))
    browser.SetSelectedItemNumber(4)
    assert logic.use_frame_as_support(browser, support) == 4
    assert logic.support_frames(browser, support) == [0, 4]
    support_labels, names = logic.label_arrays(browser, support)
    np.testing.assert_array_equal(support_labels[4], logic.label_arrays(browser, result)[0][4])
    assert names == [cine.object_names[k] for k in sorted(cine.object_names)]
    assert logic.use_frame_as_support(browser, support, 0) == 0  # already a support: unchanged
    np.testing.assert_array_equal(logic.label_arrays(browser, support)[0][0], cine.labels[0])


def test_start_names_a_missing_model_and_refuses_other_settings(logic, synthetic_cine, painted):
    """A model path that is not there fails before anything starts, naming it; settings are a RunSettings."""
    browser, support = painted(synthetic_cine, frames=(0,))
    with pytest.raises(ValueError, match="model file .*nowhere.safetensors does not exist"):
        logic.start(browser, support, RunSettings(method="copy"), model="/nowhere.safetensors")
    with pytest.raises(TypeError, match="RunSettings"):
        logic.start(browser, support, {"method": "copy"})
    assert logic.result_sequence(browser, support) is None
    assert logic.run_settings(None, method="copy", window=None) == RunSettings.from_model(None, method="copy")
