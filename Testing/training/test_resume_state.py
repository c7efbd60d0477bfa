"""The resumable training state: safetensors + JSON, nothing unpickled; a resumed run continues exactly
where an uninterrupted one would be; a planted pickle (state.pt, a pickle under the new name, an --init
.pt / .pth) is refused through the real `xrayvos train` / `finetune` commands without ever running."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from XRayVOSLib.errors import CancelledError, InputError
from XRayVOSLib.model.checkpoint import save_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.loop import Trainer, build_network
from XRayVOSLib.training.state import STATE_FORMAT, read_state, write_state
from training_helpers import one_line_error, plant_pickle, run_cli, tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def init_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("init") / "init.safetensors", LocalMatchingNetwork(),
                           {"trained": False})


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(davis_root: Path, tmp_path: Path) -> None:
    # loader_refresh=1: every step draws a fresh loader shuffle from the global RNG, which the state restores.
    config = dict(steps=4, save_every=2, loader_refresh=1)
    straight = Trainer(tiny_config(davis_root, tmp_path / "straight", **config))
    straight.train(show_progress=False)

    cancel = threading.Event()
    first = Trainer(tiny_config(davis_root, tmp_path / "cut", **config))
    with pytest.raises(CancelledError):
        first.train(show_progress=False, cancel=cancel, on_step=lambda step, *_: step == 2 and cancel.set())
    state_path = tmp_path / "cut" / "state.safetensors"
    assert not (tmp_path / "cut" / "state.pt").exists()
    with safe_open(str(state_path), framework="pt") as f:  # safetensors: tensors plus a JSON header, no pickle
        header = json.loads(f.metadata()["state"])
        assert f.metadata()["format"] == STATE_FORMAT and any(k.startswith("optimizer.") for k in f.keys())
    assert header["step"] == 2 and len(header["rng"]["torch"]) == torch.get_rng_state().numel()
    assert set(header["fingerprint"]) == {"config", "data", "init"}

    second = Trainer(tiny_config(davis_root, tmp_path / "cut", **config))
    assert second.resume() and second.step == 2
    second.train(show_progress=False)
    ours, theirs = second.network.state_dict(), straight.network.state_dict()
    changed = [k for k in ours if not torch.equal(ours[k], first.network.state_dict()[k])]
    assert changed, "the resumed steps changed nothing: the comparison below would prove nothing"
    differ = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not differ, f"resumed run differs from the uninterrupted one in {len(differ)} tensors: {differ[:3]}"
    rows = (tmp_path / "cut" / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4"]  # step 3 logged once, not twice


def test_a_state_is_refused_when_it_does_not_fit(davis_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(davis_root, run))
    narrow = LocalMatchingNetwork(ModelConfig(value_dim=64))
    write_state(run / "state.safetensors", narrow, torch.optim.AdamW(narrow.parameters()),
                torch.amp.GradScaler("cuda", enabled=False), 1, trainer.config, {}, trainer.fingerprint)
    with pytest.raises(InputError, match=r"state.safetensors does not fit this run's network .* tensors differ, "
                                         r"e.g. \['decoder.compress"):
        trainer.resume()
    assert trainer.step == 0
    # A state past the run's length is refused rather than "resumed" with zero steps and a wrong step count.
    write_state(run / "state.safetensors", trainer.network, trainer.optimizer, trainer.scaler, 9, trainer.config,
                {}, trainer.fingerprint)
    with pytest.raises(InputError, match="is at step 9, past this run's 3 steps"):
        Trainer(tiny_config(davis_root, run)).resume()
    # NaN weights in a state: refused by name.
    poisoned = trainer.network.state_dict()
    next(v for v in poisoned.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    write_state(run / "state.safetensors", trainer.network, trainer.optimizer, trainer.scaler, 1, trainer.config,
                {}, trainer.fingerprint)
    with pytest.raises(InputError, match="NaN or infinite values"):
        read_state(run / "state.safetensors")


def test_unpickling_the_planted_payload_really_runs_code(tmp_path: Path) -> None:
    """The control: without this, the refusals below could pass with a payload that does nothing."""
    marker = tmp_path / "marker"
    pickle.loads(plant_pickle(tmp_path / "state.pt", marker).read_bytes())
    assert marker.read_text() == "unpickled"


def test_train_refuses_a_planted_state_pt_without_unpickling(davis_root: Path, tmp_path: Path) -> None:
    marker, out_dir = tmp_path / "marker", tmp_path / "run"
    plant_pickle(out_dir / "state.pt", marker)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny_config(davis_root, out_dir).to_dict()))
    done = run_cli("train", "--config", str(config), "--quiet")
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert f"{out_dir / 'state.pt'} is a training state in the old pickle format, which is never loaded" in line
    assert not marker.exists() and not (out_dir / "model.safetensors").exists()


def test_finetune_refuses_planted_pickles_without_unpickling(davis_root: Path, init_model: Path,
                                                             tmp_path: Path) -> None:
    marker, work, out = tmp_path / "marker", tmp_path / "work", tmp_path / "tuned.safetensors"
    common = ["finetune", "--data", str(davis_root), "--out", str(out), "--steps", "2", "--size", "64",
              "--batch-size", "2", "--device", "cpu", "--quiet"]
    cases = {  # where the pickle is planted -> what the one error line says
        "state.pt": (work / "model" / "state.pt", ["--init", str(init_model), "--work-dir", str(work)],
                     "state.pt is a training state in the old pickle format"),
        "renamed": (work / "model" / "state.safetensors", ["--init", str(init_model), "--work-dir", str(work)],
                    "state.safetensors is not a readable training state"),
        "init": (tmp_path / "some.pt", ["--init", str(tmp_path / "some.pt")],
                 "some.pt: not an XRayVOS model; fine-tuning starts from a .safetensors model"),
    }
    for name, (planted, extra, expected) in cases.items():
        plant_pickle(planted, marker)
        done = run_cli(*common, *extra)
        assert done.returncode == 2, (name, done.stderr)
        assert expected in one_line_error(done.stderr), name
        assert not marker.exists() and not out.exists(), name
        planted.unlink()


def test_only_the_known_imagenet_pth_is_read(pretrained_mobilenet: Path, tmp_path: Path) -> None:
    network, info = build_network(TrainConfig(init=str(pretrained_mobilenet)))
    assert info == {"init": str(pretrained_mobilenet)}
    stem = network.key_encoder.trunk.state_dict()["features.0.0.weight"]
    assert stem.shape[1] == 1 and float(stem.abs().sum()) > 0  # the ImageNet stem, summed to one grey channel
    # Any other .pth (a pickle) is refused by its hash, before torch opens it.
    marker = tmp_path / "marker"
    evil = plant_pickle(tmp_path / "mobilenet_v2-b0353104.pth", marker)
    with pytest.raises(InputError, match="neither an XRayVOS model .* nor torchvision's ImageNet MobileNetV2"):
        build_network(TrainConfig(init=str(evil)))
    assert not marker.exists()
