"""End-to-end training: a few real optimisation steps, resumable state, fine-tune (plain and two-shot),
DDP with gloo and 2 processes, and the produced checkpoints loading into Propagator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from XRayVOSLib.cli import main as cli_main
from XRayVOSLib.errors import InputError
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.io import read_mask_folder
from XRayVOSLib.model.checkpoint import read_metadata, rewrite_info, save_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.settings import RunSettings
from XRayVOSLib.synth import write_davis_dataset
from XRayVOSLib.training.finetune import inherited_settings, pseudo_label
from XRayVOSLib.training.loop import Trainer
from XRayVOSLib.training.validation import validation_jf
from training_helpers import REPO, tiny_config


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("davis")
    write_davis_dataset(root, num_videos=2, num_frames=8, size=96, seed=5)
    # Sparse labels, as a site would have them: frames 0 and 5 only; frames 2 and 3 are held out.
    for video in (root / "Annotations").iterdir():
        held_out = root / "Validation" / video.name
        held_out.mkdir(parents=True)
        for png in video.glob("*.png"):
            if int(png.stem) in (2, 3):
                png.rename(held_out / png.name)
            elif int(png.stem) not in (0, 5):
                png.unlink()
    return root


@pytest.fixture(scope="module")
def init_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("init") / "init.safetensors", LocalMatchingNetwork(),
                           {"trained": False})


def test_training_steps_change_weights_and_resume(davis_root: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(davis_root, tmp_path / "run"))
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    model_path = trainer.train(show_progress=False)
    after = trainer.network.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("decoder.") for k in changed)
    assert not any(k.startswith("key_encoder.trunk.") for k in changed)  # frozen trunk by default
    rows = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4
    assert np.isfinite(float(rows[-1].split(",")[-1]))
    # Resume: a new trainer continues from step 3 to 5.
    resumed = Trainer(tiny_config(davis_root, tmp_path / "run", steps=5))
    assert resumed.resume() and resumed.step == 3
    resumed.train(show_progress=False)
    assert resumed.step == 5
    # The schedule continues from the config's lr, not from the scheduled lr stored in the optimizer state.
    resumed.step = 4
    assert resumed.optimizer.param_groups[1]["lr"] == pytest.approx(resumed.config.lr * resumed._lr_factor())
    config, info = read_metadata(model_path)
    assert info["trained"] and info["steps"] == 5 and config == ModelConfig()
    prop = Propagator.load(model_path, RunSettings.from_model(model_path, device="cpu"))
    frames = np.asarray(np.random.default_rng(0).integers(0, 255, (4, 64, 64)), dtype=np.uint8)
    support = np.zeros((64, 64), np.uint8)
    support[20:40, 20:40] = 1
    out = prop.propagate(frames, {0: support})
    assert out.shape == (4, 64, 64) and np.array_equal(out[0], support)


def test_pseudo_labels_keep_labelled_frames_exact(davis_root: Path, init_model: Path, tmp_path: Path) -> None:
    videos = pseudo_label(davis_root, init_model, tmp_path / "pseudo", device="cpu")
    for video in videos:
        pseudo = read_mask_folder(tmp_path / "pseudo" / video)
        labelled = read_mask_folder(davis_root / "Annotations" / video)
        assert sorted(pseudo) == list(range(8))
        for t, mask in labelled.items():
            assert np.array_equal(pseudo[t], mask)


@pytest.mark.parametrize("two_shot", [False, True])
def test_finetune_cli_then_propagate(davis_root: Path, init_model: Path, tmp_path: Path, two_shot: bool,
                                     capsys) -> None:
    out = tmp_path / "tuned.safetensors"
    carried = {"decision": "threshold", "threshold": 0.4, "temporal_blend": 0.7, "support_warp": 0.2}
    calibrated = rewrite_info(init_model, tmp_path / "calibrated.safetensors",
                              {**read_metadata(init_model)[1], "settings": carried})
    args = ["finetune", "--data", str(davis_root), "--init", str(calibrated), "--out", str(out), "--steps", "2",
            "--device", "cpu", "--size", "64", "--batch-size", "2", "--progress-json"]
    assert cli_main(args + (["--two-shot"] if two_shot else [])) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[-1]["event"] == "done" and lines[-1]["two_shot"] == two_shot
    assert [e["done"] for e in lines if e["event"] == "progress"][-1] == 2
    assert out.is_file() and not out.with_name(out.name + ".partial").exists()
    # The fine-tune keeps its start's carried settings (decision rule, threshold, fusion weights) ...
    info = read_metadata(out)[1]
    assert info["settings"] == carried and info["settings_from"] == str(calibrated) and info["trained"]
    assert lines[-1]["settings"] == carried
    settings = RunSettings.from_model(out, device="cpu")
    assert settings == RunSettings(device="cpu", **carried)
    # ... and the model it wrote propagates.
    frames = np.asarray(np.random.default_rng(1).integers(0, 255, (3, 64, 64)), dtype=np.uint8)
    support = np.zeros((64, 64), np.uint8)
    support[10:30, 20:40] = 1
    assert Propagator.load(out, settings).propagate(frames, {0: support}).shape == (3, 64, 64)


def test_finetune_of_a_model_without_settings_carries_none(init_model: Path, tmp_path: Path) -> None:
    assert inherited_settings(init_model) == {}
    bad = rewrite_info(init_model, tmp_path / "bad.safetensors", {"settings": {"threshold": 1.5}})
    with pytest.raises(InputError, match="bad.safetensors settings: setting threshold must be"):
        inherited_settings(bad)


def test_validation_scores_the_held_out_frames_with_the_models_settings(davis_root: Path, init_model: Path,
                                                                        tmp_path: Path) -> None:
    carried = {"decision": "threshold", "threshold": 0.45, "temporal_blend": 0.0, "support_warp": 0.0}
    model = rewrite_info(init_model, tmp_path / "m.safetensors", {"trained": True, "settings": carried})
    result = validation_jf(model, davis_root, davis_root / "Validation", device="cpu")
    assert (result["frames"], result["videos"]) == (4, 2) and 0.0 <= result["j_and_f"] <= 1.0
    assert result["settings"] == carried
    # A frame both trained on and held out would score the support itself: refused, naming the folder.
    leaky = tmp_path / "leaky"
    for video in (davis_root / "Annotations").iterdir():
        (leaky / video.name).mkdir(parents=True)
        (leaky / video.name / "00000.png").write_bytes((video / "00000.png").read_bytes())
    with pytest.raises(InputError, match=r"leaky/synth_0000: frame\(s\) \[0\] are both training labels"):
        validation_jf(model, davis_root, leaky, device="cpu")
    (tmp_path / "none").mkdir()
    assert validation_jf(model, davis_root, tmp_path / "none")["j_and_f"] is None


def test_finetune_rejects_folder_without_annotations(tmp_path: Path, init_model: Path) -> None:
    root = tmp_path / "empty"
    write_davis_dataset(root, num_videos=1, num_frames=4, size=96, seed=1)
    for png in (root / "Annotations").rglob("*.png"):
        png.unlink()
    code = cli_main(["finetune", "--data", str(root), "--init", str(init_model), "--out",
                     str(tmp_path / "m.safetensors"), "--steps", "1", "--device", "cpu"])
    assert code == 2
    assert not (tmp_path / "m.safetensors").exists()


def test_ddp_gloo_two_processes(davis_root: Path, tmp_path: Path) -> None:
    config = tiny_config(davis_root, tmp_path / "ddp", steps=2).to_dict()
    cfg_path = tmp_path / "ddp.json"
    cfg_path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "XRayVOSLib", "train", "--config", str(cfg_path), "--quiet"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    _, info = read_metadata(tmp_path / "ddp" / "model.safetensors")
    assert info["steps"] == 2
