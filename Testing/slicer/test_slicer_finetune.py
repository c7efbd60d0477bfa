"""Fine-tuning from the Slicer module's logic: export of reviewed cases, checks, a real background fine-tune,
cancel, and the model registry (slicer-core scene, the real `python -m XRayVOSLib finetune` process)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from XRayVOSLib.settings import RunSettings

# fixtures from conftest.py: mrml, logic, synthetic_cine, painted

pytestmark = pytest.mark.slicer


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bundled_digest():
    """The bundled model's digest before the test, checked unchanged after it."""
    from XRayVOSLib.model_files import default_model_path

    path = default_model_path()
    before = _sha256(path) if path is not None and path.is_file() else None
    yield before
    if before is not None:
        assert _sha256(path) == before, "the bundled model changed"


@pytest.fixture
def ft(logic, tmp_path):
    from xrayvos_slicer.finetune_logic import FinetuneLogic

    out = FinetuneLogic(logic.scene, models_dir=tmp_path / "user-models")
    out.temp_root = tmp_path / "tmp"
    return out


@pytest.fixture
def two_cases(logic, painted):
    """Case A painted at 0, 5, 11 (names as generated); case B painted at 0 with its segments created in the
    reverse order, plus result frames 3 and 7 marked reviewed (a copy-propagation result)."""
    from XRayVOSLib.synth import generate_cine

    cine_a = generate_cine(seed=3, num_frames=12, size=128)
    cine_b = generate_cine(seed=3, num_frames=10, size=128)  # same objects, another length
    browser_a, support_a = painted(cine_a, frames=(0, 5, 11))
    browser_b = logic.add_cine(cine_b.frames, None, cine_b.spacing, "case B")
    names = dict(cine_b.object_names)
    reverse = {v: max(names) + 1 - v for v in names}  # label k painted as value (n+1-k): segments made in reverse
    support_b = logic.set_support(browser_b, 0, np.vectorize(lambda v: reverse.get(int(v), 0))(cine_b.labels[0]),
                                  names={reverse[k]: names[k] for k in names})
    logic.propagate(browser_b, support_b, RunSettings(method="copy"))
    return (cine_a, browser_a, support_a), (cine_b, browser_b, support_b)


def test_export_from_a_real_scene_gives_labelled_frames_with_consistent_ids(ft, two_cases, tmp_path):
    from XRayVOSLib.io import read_mask
    from xrayvos_slicer import training_cases as TC

    (cine_a, _, support_a), (cine_b, _, support_b) = two_cases
    assert ft.mark_reviewed(support_b, [0, 3, 7]) == [0, 3, 7]
    assert [s.GetName() for s in ft.candidate_cases()] == [s.GetName() for s in
                                                           (ft._browser_and_support(support_a)[1],
                                                            ft._browser_and_support(support_b)[1])]
    cases = [TC.collect_case(*ft._browser_and_support(s)) for s in (support_a, support_b)]
    assert cases[0].painted_frames == [0, 5, 11] and cases[0].reviewed_frames == []
    assert cases[1].painted_frames == [0] and cases[1].reviewed_frames == [3, 7]  # painted 0 wins over reviewed
    assert cases[1].names == list(reversed(cases[0].names))
    names = TC.unify_segment_names(cases)
    assert names == cases[0].names

    summaries = TC.export_cases(cases, tmp_path / "davis", names)
    root = tmp_path / "davis"
    folders = [s["folder"] for s in summaries]
    assert len(list((root / "JPEGImages" / folders[0]).glob("*.png"))) == 12
    assert len(list((root / "JPEGImages" / folders[1]).glob("*.png"))) == 10
    # Labelled frames only; the interior painted frame of case A is held out for validation.
    assert sorted(p.name for p in (root / "Annotations" / folders[0]).iterdir()) == ["00000.png", "00011.png"]
    assert sorted(p.name for p in (root / "Validation" / folders[0]).iterdir()) == ["00005.png"]
    # Reviewed frames train but are never held out (they are the base model's own predictions).
    assert sorted(p.name for p in (root / "Annotations" / folders[1]).iterdir()) == ["00000.png", "00003.png",
                                                                                     "00007.png"]
    assert not (root / "Validation" / folders[1]).exists()
    np.testing.assert_array_equal(read_mask(root / "Annotations" / folders[0] / "00011.png"), cine_a.labels[11])
    np.testing.assert_array_equal(read_mask(root / "Validation" / folders[0] / "00005.png"), cine_a.labels[5])
    # Case B was painted with reversed values; the export maps by name, so ids match case A's.
    np.testing.assert_array_equal(read_mask(root / "Annotations" / folders[1] / "00000.png"), cine_b.labels[0])
    # Reviewed frames of a copy result: the frame-0 labels, under the same ids.
    np.testing.assert_array_equal(read_mask(root / "Annotations" / folders[1] / "00007.png"), cine_b.labels[0])
    assert summaries[1]["train_frames"] == [0, 3, 7] and summaries[1]["validation_frames"] == []
    # Frames are the cine's pixels.
    import cv2

    frame = cv2.imread(str(root / "JPEGImages" / folders[0] / "00004.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(frame, cine_a.frames[4])


def test_checks_run_before_anything_starts(ft, logic, two_cases, painted, tmp_path):
    from XRayVOSLib.synth import generate_cine
    from xrayvos_slicer.finetune_logic import FinetuneSettings
    from xrayvos_slicer.training_cases import SegmentNameMismatch

    (cine_a, _, support_a), (cine_b, browser_b, support_b) = two_cases
    settings = FinetuneSettings(name="site model", device="cpu", steps=2)

    # A case with no annotations: named in the message.
    empty_browser = logic.add_cine(generate_cine(seed=4, num_frames=6, size=64).frames, None, None, "empty case")
    empty_support = logic.support_segmentation(empty_browser)
    with pytest.raises(ValueError, match="'empty case' has no annotations"):
        ft.plan(settings, cases=[support_a, empty_support])

    # Segment names that differ: the error lists them and suggests a mapping; the mapping makes it pass.
    first_name = list(dict(cine_b.object_names).values())[0]
    segmentation = support_b.GetSegmentation()
    segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(first_name)).SetName(first_name.upper())
    logic.sync_support_segments(browser_b, support_b)
    with pytest.raises(SegmentNameMismatch) as mismatch:
        ft.plan(settings, cases=[support_a, support_b])
    assert first_name.upper() in str(mismatch.value) and first_name in str(mismatch.value)
    assert mismatch.value.suggestion == {first_name.upper(): first_name}
    plan = ft.plan(settings, cases=[support_a, support_b], name_mapping=mismatch.value.suggestion)
    assert plan.segment_names[0] == first_name and plan.two_shot  # case B has 1-2 training frames: auto on

    # Not enough disk space.
    ft.disk_margin_bytes = 1 << 60
    with pytest.raises(ValueError, match="not enough free disk space"):
        ft.plan(settings, cases=[support_a])
    ft.disk_margin_bytes = 0

    # CUDA without a GPU.
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA GPU"):
            ft.plan(FinetuneSettings(name="x", device="cuda"), cases=[support_a])

    # Names: the bundled model's file is never a target; an existing model is not overwritten.
    from XRayVOSLib.model_files import default_model_path

    bundled = default_model_path()
    if bundled is not None:
        ft.models_dir = bundled.parent
        with pytest.raises(ValueError, match="bundled model"):
            ft.plan(FinetuneSettings(name=bundled.stem, device="cpu"), cases=[support_a])
    with pytest.raises(ValueError, match="model name"):
        ft.plan(FinetuneSettings(name="../escape", device="cpu"), cases=[support_a])
    assert not (tmp_path / "tmp").exists()  # plan() writes nothing


@pytest.mark.slow
def test_real_finetune_installs_a_model_that_propagation_uses(ft, logic, two_cases, bundled_digest):
    pytest.importorskip("torch")
    from xrayvos_slicer.finetune_logic import FinetuneSettings

    (cine_a, browser_a, support_a), (_, _, support_b) = two_cases
    ft.mark_reviewed(support_b, [3, 7])
    seen = []
    path = ft.finetune(FinetuneSettings(name="Site A v1", device="cpu", steps=3, size=64, batch_size=2,
                                        two_shot="off"),
                       cases=[support_a, support_b], progress=lambda run: seen.append((run.stage, run.step)),
                       timeout=600)
    assert path == ft.models_dir / "Site_A_v1.safetensors" and path.is_file()
    assert max(step for _, step in seen) >= 1 and "train" in {stage for stage, _ in seen}
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["name"] == "Site A v1" and card["steps"] == 3 and card["two_shot"] is False
    assert [c["painted_frames"] for c in card["cases"]] == [[0, 5, 11], [0]]
    assert card["validation"]["frames"] == 1  # painted frame 5 of case A (reviewed frames are not held out)
    assert 0.0 <= card["validation"]["finetuned"] <= 1.0 and 0.0 <= card["validation"]["initial"] <= 1.0
    # Base and fine-tuned model are scored under one decision rule: the fine-tune keeps the bundled model's
    # carried settings (decision, threshold, fusion weights), and the card says what the new file carries.
    from XRayVOSLib.model_files import carried_settings

    assert RunSettings.from_model(path).carried() == RunSettings.from_model(None).carried()
    assert card["settings"] == carried_settings(path)
    assert "Validation" in path.with_suffix(".md").read_text()
    entries = ft.available_models()
    assert [e.path for e in entries if not e.bundled] == [path]
    assert entries[0].bundled or len(entries) == 1
    assert not list(ft.temp_root.iterdir())  # the export and checkpoints are gone

    run = logic.start(browser_a, support_a, RunSettings.from_model(path, device="cpu", window=7), model=str(path))
    while logic.poll(run) == "running":
        run.worker.wait(0.2)
    assert run.state == "done", run.error
    assert run.result.GetAttribute("XRayVOS.Model") == str(path)
    labels, _ = logic.label_arrays(browser_a, run.result)
    np.testing.assert_array_equal(labels[[0, 5, 11]], cine_a.labels[[0, 5, 11]])


@pytest.mark.slow
def test_cancel_leaves_no_model(ft, two_cases, bundled_digest):
    pytest.importorskip("torch")
    from xrayvos_slicer.finetune_logic import CANCELLED, FinetuneSettings

    (_, _, support_a), _ = two_cases
    run = ft.start(FinetuneSettings(name="never", device="cpu", steps=5000, size=64, batch_size=2),
                   cases=[support_a])
    deadline = time.monotonic() + 300
    while ft.poll(run) == "running" and run.step < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.step >= 1, run.error  # it was really training when cancelled
    ft.cancel(run)
    assert run.state == CANCELLED and not run.worker.running
    # It stopped itself at the next step (SIGTERM -> the cancel event), with the protocol's last line and code.
    from XRayVOSLib.events import EXIT_CANCELLED

    last = run.worker.poll()[-1]
    assert run.worker.returncode == EXIT_CANCELLED and last["event"] == "cancelled" and last["done"] >= 1, last
    assert not ft.models_dir.exists() or not list(ft.models_dir.iterdir())
    assert not run.work_dir.exists() and not list(ft.temp_root.iterdir())  # checkpoints went with it
    assert [e for e in ft.available_models() if not e.bundled] == []


def test_model_registry_lists_complete_checkpoints_only(tmp_path, bundled_digest):
    import subprocess
    import sys

    pytest.importorskip("torch")
    from XRayVOSLib.model.checkpoint import save_checkpoint
    from XRayVOSLib.model.network import LocalMatchingNetwork
    from xrayvos_slicer import models

    source = save_checkpoint(tmp_path / "trained.safetensors", LocalMatchingNetwork(), {"steps": 7})
    folder = tmp_path / "models"
    installed = models.install_model(source, folder, "Site B", {"name": "Site B", "steps": 7})
    assert installed.name == "Site_B.safetensors"
    assert json.loads(installed.with_suffix(".json").read_text())["steps"] == 7
    (folder / "junk.safetensors").write_bytes(b"not a checkpoint")
    (folder / ".Site_C.safetensors.partial").write_bytes(source.read_bytes())
    users = [e for e in models.available_models(folder) if not e.bundled]
    assert [(e.name, e.path) for e in users] == [("Site B", installed)]
    with pytest.raises(ValueError, match="already exists"):
        models.install_model(source, folder, "Site B", {})
    bundled = models.bundled_model()
    if bundled is not None:
        assert models.available_models(folder)[0].bundled
        with pytest.raises(ValueError, match="never overwritten"):
            models.install_model(source, bundled.path.parent, bundled.path.stem, {})
    # Listing models reads safetensors headers only: no torch in the GUI process.
    code = ("import sys; from XRayVOSLib.model_files import read_model_header; "
            f"h = read_model_header({str(installed)!r}); assert h[1]['steps'] == 7, h; "
            "assert 'torch' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.slow
def test_davis_folder_route_and_a_failing_process(ft, tmp_path, bundled_digest):
    """A DAVIS folder instead of scene cases; masks of the wrong size make the process fail with its message."""
    pytest.importorskip("torch")
    from XRayVOSLib.io import read_mask, write_mask
    from XRayVOSLib.synth import write_davis_dataset
    from xrayvos_slicer.finetune_logic import FAILED, FinetuneSettings

    root = tmp_path / "davis"
    write_davis_dataset(root, num_videos=1, num_frames=6, size=64, seed=5)
    with pytest.raises(ValueError, match="one of the two"):
        ft.plan(FinetuneSettings(name="x", device="cpu"))
    plan = ft.plan(FinetuneSettings(name="x", device="cpu"), data_dir=root)
    assert plan.data_dir == root and not plan.two_shot  # 6 annotated frames: plain fine-tuning
    for png in (root / "Annotations").rglob("*.png"):
        write_mask(png, read_mask(png)[:32, :32])
    run = ft.start(FinetuneSettings(name="broken", device="cpu", steps=3, size=32, batch_size=1), data_dir=root)
    while ft.poll(run) == "running":
        run.worker.wait(0.2)
    assert run.state == FAILED and "masks are (32, 32) but frames are (64, 64)" in run.error, run.error
    assert not ft.models_dir.exists() or not list(ft.models_dir.iterdir())
    assert root.is_dir() and not run.work_dir.exists()  # the user's folder is kept, our temporary one is not


def test_hold_out_rule_and_name_suggestions():
    from xrayvos_slicer.training_cases import suggest_mapping, validation_frames

    assert validation_frames([0, 11]) == []
    assert validation_frames([0, 5, 11]) == [5]
    assert validation_frames([0, 3, 5, 8, 11]) == [3, 8]  # every other interior frame; first and last train
    assert validation_frames([0, 3, 5, 8, 11], painted=[0, 5, 11]) == [5]  # reviewed frames never held out
    assert validation_frames([0, 3, 7], painted=[0]) == []
    sets = {"a": {"LAD", "Catheter"}, "b": {"lad", "Cathetr"}, "c": {"LAD", "Catheter", "Balloon"}}
    order = ["LAD", "Catheter", "lad", "Cathetr", "Balloon"]
    assert suggest_mapping(sets, order) == {"lad": "LAD", "Cathetr": "Catheter"}  # Balloon: no close name
