"""Training configs: the committed recipe of the shipped model loads and chains; removed or unknown keys are
refused naming the file; a checkpoint init continues with its weights and one level of its history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.model.checkpoint import save_checkpoint
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.training.config import LossConfig, TrainConfig
from XRayVOSLib.training.loop import build_dataset, build_network

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "models" / "recipe"


def test_the_committed_recipe_loads_and_chains() -> None:
    stages = sorted(RECIPE.glob("*.json"))
    assert [p.name for p in stages] == ["1_pretrain.json", "2_detail.json"]
    pretrain, detail = (TrainConfig.load(p) for p in stages)
    assert (pretrain.steps, detail.steps) == (6000, 1500)  # 7,500 in all, as the shipped model records
    assert pretrain.init.endswith("mobilenet_v2-b0353104.pth")  # ImageNet trunk, then the previous stage
    assert detail.init == f"{pretrain.out_dir}/model.safetensors"
    assert pretrain.data == detail.data and pretrain.matching == detail.matching == "local"
    assert pretrain.losses.contrastive and detail.losses.contrastive and not detail.losses.consistency
    assert (detail.losses.bootstrap_start, detail.losses.bootstrap_end) == (0, 0)
    # Every key of the files is a field the config has: nothing is silently dropped.
    for path, config in zip(stages, (pretrain, detail)):
        data = json.loads(path.read_text())
        resolved = config.to_dict()
        assert all(resolved[k] == v for k, v in data.items() if k != "losses"), path
        assert all(resolved["losses"][k] == v for k, v in data["losses"].items()), path


def test_unknown_keys_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"steps": 10, "stride": 16}))  # the stride was an option in older recipes
    with pytest.raises(InputError, match=f"{path}: unknown training config keys \\['stride'\\]"):
        TrainConfig.load(path)
    path.write_text(json.dumps({"losses": {"contrastive": True, "dice": True}}))
    with pytest.raises(InputError, match=f"{path}: unknown loss keys \\['dice'\\]"):
        TrainConfig.load(path)
    assert TrainConfig.from_dict({"losses": {"consistency": True}}).losses == LossConfig(consistency=True)


def test_a_checkpoint_init_continues_with_its_weights_and_one_level_of_history(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = LocalMatchingNetwork().eval()
    staged = save_checkpoint(tmp_path / "staged.safetensors", source, info={"steps": 9, "init_info": {"steps": 1}})
    network, info = build_network(TrainConfig(init=str(staged)))
    assert info == {"init": str(staged), "init_info": {"steps": 9}}
    given = source.state_dict()
    assert all(torch.equal(v, given[k]) for k, v in network.state_dict().items())
    assert build_network(TrainConfig())[1] == {"init": "random"}
    # A model of an older config version cannot be continued: the error names it.
    old = _downgrade(save_checkpoint(tmp_path / "old.safetensors", source))
    with pytest.raises(ModelError, match="old.safetensors: model config version 5 is not supported"):
        build_network(TrainConfig(init=str(old)))
    with pytest.raises(InputError, match="init weights .*absent.pth do not exist"):
        build_network(TrainConfig(init=str(tmp_path / "absent.pth")))


def _downgrade(path: Path) -> Path:
    """Rewrite path's config metadata as an older version's (5, which also stored the stride), tensors kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config.update(version=5, stride=16)
    meta["config"] = json.dumps(config)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("values, message", [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"steps": "10"}, "steps must be an integer >= 1, got '10'"),
    ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
    ({"size": 0}, "size must be an integer >= 32, got 0"),
    ({"size": 100}, "size must be a multiple of 16, got 100"),
    ({"clip_length": 1}, "clip_length must be an integer >= 2"),
    ({"lr": float("nan")}, "lr must be a number > 0, got nan"),
    ({"lr": -1e-4}, "lr must be a number > 0"),
    ({"grad_clip": "3"}, "grad_clip must be a number > 0"),
    ({"freeze_trunk": "yes"}, "freeze_trunk must be true or false"),
    ({"augment": "heavy"}, "augment must be one of none, weak, strong, got 'heavy'"),
    ({"matching": "flow"}, "matching must be one of local, global"),
    ({"synth_generator": "v3"}, "synth_generator must be v1 or v2, got 'v3'"),
    ({"window": 4}, "setting window must be a positive odd number"),
    ({"losses": []}, "losses must be a JSON object"),
    ({"losses": {"bootstrap_top_p": 0}}, r"losses.bootstrap_top_p must be a number in \(0, 1\]"),
    ({"losses": {"bootstrap_start": 10, "bootstrap_end": 5}}, "losses.bootstrap_end must be an integer >= 10"),
])
def test_training_config_values_are_range_checked_naming_the_file(tmp_path: Path, values: dict,
                                                                  message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values))
    with pytest.raises(InputError, match=f"^{path}: {message}"):
        TrainConfig.load(path)


def test_train_cli_range_checks_are_one_line(tmp_path: Path, capsys) -> None:
    from XRayVOSLib.cli import main as cli_main

    out_dir = tmp_path / "run"
    assert cli_main(["train", "--steps", "0", "--out-dir", str(out_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == "xrayvos train: error: training config: steps must be an integer >= 1, got 0\n"
    (tmp_path / "list.json").write_text("[1, 2]")
    assert cli_main(["train", "--config", str(tmp_path / "list.json")]) == 2
    assert "list.json must be a JSON object, got list" in capsys.readouterr().err
    assert not out_dir.exists()


def test_on_the_fly_synthetic_data_uses_the_configured_generator() -> None:
    """synth_generator "v2" draws v2 cines (3D anatomy, contrast filling) for training; "v1" stays the default."""
    from XRayVOSLib.synth import SynthConfig, SynthV2Config

    v1 = build_dataset(TrainConfig(data="synthetic", size=64, synthetic_length=2))
    v2 = build_dataset(TrainConfig(data="synthetic", size=64, synthetic_length=2, synth_generator="v2"))
    assert type(v1.synth_config) is SynthConfig and type(v2.synth_config) is SynthV2Config
    first, second = v1[0], v2[0]
    assert first["frames"].shape == second["frames"].shape and not torch.equal(first["frames"], second["frames"])
