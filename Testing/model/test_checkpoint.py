"""Checkpoints: round trip, fp16, mismatched, old-version or corrupt files, metadata rewrites that keep every
tensor, the shipped model's metadata, and TorchScript vs eager agreement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from XRayVOSLib.errors import ModelError
from XRayVOSLib.inference.accelerate import AcceleratedNetwork
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.checkpoint import load_checkpoint, read_metadata, rewrite_info, save_checkpoint
from XRayVOSLib.model.config import CONFIG_VERSION, ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.settings import RunSettings
from network_helpers import self_readout


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def network() -> LocalMatchingNetwork:
    torch.manual_seed(0)
    net = LocalMatchingNetwork().eval()
    # Non-trivial BatchNorm statistics, so a lost buffer would change the output.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def forward(net: LocalMatchingNetwork, seed: int = 1) -> torch.Tensor:
    """Encode a frame and a mask, read that memory back and decode: probs 1, K+1, H, W."""
    return self_readout(net, torch.Generator().manual_seed(seed), 64, 64)[1]


def test_round_trip_gives_identical_outputs(network: LocalMatchingNetwork, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", network, info={"trained": True, "epochs": 3})
    loaded, info = load_checkpoint(path)
    assert info == {"trained": True, "epochs": 3}
    assert loaded.config == network.config
    assert torch.equal(forward(loaded), forward(network))
    assert not (tmp_path / "m.safetensors.partial").exists()
    assert path.stat().st_mode & 0o777 == 0o644  # readable by everyone sharing a models folder
    config, info = read_metadata(path)
    assert config == network.config and info["epochs"] == 3


def test_propagator_loads_a_checkpoint_path(network: LocalMatchingNetwork, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", network, info={"trained": False})
    settings = RunSettings.from_model(path, device="cpu")
    prop = Propagator.load(path, settings, accelerate=False)
    assert prop.trained is False
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:20, 10:30] = 1
    same = Propagator.load(network, settings, accelerate=False)
    assert np.array_equal(prop.propagate(frames, {0: mask}), same.propagate(frames, {0: mask}))


def test_fp16_checkpoint_loads_into_fp32(network: LocalMatchingNetwork, tmp_path: Path) -> None:
    full = save_checkpoint(tmp_path / "full.safetensors", network)
    half = save_checkpoint(tmp_path / "half.safetensors", network, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    ref = network.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == ref[name].dtype
        if tensor.is_floating_point():
            assert torch.equal(tensor, ref[name].half().float())
    torch.testing.assert_close(forward(loaded), forward(network), rtol=0, atol=2e-2)


def _rewrite(src: Path, dst: Path, config_edit=None, drop: str | None = None, meta_edit=None,
             tensor_edit=None) -> Path:
    """A copy of a real checkpoint with its config, metadata or tensors edited, written past our checks."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != drop}
    if config_edit:
        config = json.loads(meta["config"])
        config_edit(config)
        meta["config"] = json.dumps(config)
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_mismatched_config_or_tensors_raise_model_error(network: LocalMatchingNetwork, tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", network)
    missing_key = next(iter(network.state_dict()))
    missing = _rewrite(good, tmp_path / "missing.safetensors", drop=missing_key)
    with pytest.raises(ModelError, match=f"missing.*{missing_key}"):
        load_checkpoint(missing)
    wide = _rewrite(good, tmp_path / "wide.safetensors", lambda c: c.update(value_dim=256))
    with pytest.raises(ModelError, match="wrong shape"):
        load_checkpoint(wide)
    unknown = _rewrite(good, tmp_path / "unknown.safetensors", lambda c: c.update(attention_heads=4))
    with pytest.raises(ModelError, match=f"unknown.safetensors: unknown model config fields.*attention_heads.*"
                                         f"version {CONFIG_VERSION}"):
        load_checkpoint(unknown)
    other = _rewrite(good, tmp_path / "arch.safetensors", lambda c: c.update(architecture="stcn-resnet50"))
    with pytest.raises(ModelError, match="arch.safetensors: architecture 'stcn-resnet50'"):
        load_checkpoint(other)
    short = _rewrite(good, tmp_path / "short.safetensors", lambda c: c.update(decoder_channels=[64, 48]))
    with pytest.raises(ModelError, match="short.safetensors: decoder_channels must be a list of 3 widths"):
        load_checkpoint(short)


@pytest.mark.parametrize("version", [5, 2, None, "6"])
def test_a_config_of_another_version_is_refused_naming_the_file(network: LocalMatchingNetwork, tmp_path: Path,
                                                                 version) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", network)
    def old(config: dict) -> None:  # an older file also stored the stride, then an option
        config.update(version=version, stride=16)
        if version is None:
            del config["version"]

    path = _rewrite(good, tmp_path / "old.safetensors", old)
    message = f"model file {path}: model config version {version!r} is not supported; this code reads version 6 only"
    for read in (load_checkpoint, read_metadata):
        with pytest.raises(ModelError) as caught:
            read(path)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="reads version 6"):  # rewriting its info alone keeps the old config: refused
        rewrite_info(path, tmp_path / "same.safetensors", {"trained": True})


def test_rewrite_keeps_every_tensor_and_can_replace_an_old_config(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = LocalMatchingNetwork().eval()
    half = save_checkpoint(tmp_path / "half.safetensors", net, info={"steps": 1}, half=True)
    old = _rewrite(half, tmp_path / "old.safetensors", lambda c: c.update(version=2, stride=16))
    converted = rewrite_info(old, tmp_path / "new.safetensors", {"steps": 2}, config=ModelConfig())
    with safe_open(str(half), framework="pt") as a, safe_open(str(converted), framework="pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for name in a.keys():
            x, y = a.get_tensor(name), b.get_tensor(name)
            assert x.dtype == y.dtype == torch.float16 and torch.equal(x.view(torch.int16), y.view(torch.int16))
    config, info = read_metadata(converted)
    assert config == ModelConfig() and info == {"steps": 2}
    assert not converted.with_name(converted.name + ".partial").exists()
    # Written in place, the file is replaced whole; a config the tensors do not fit is refused before writing.
    rewrite_info(converted, converted, {"steps": 3})
    assert read_metadata(converted)[1] == {"steps": 3}
    with pytest.raises(ModelError, match="does not match"):
        rewrite_info(converted, converted, {}, config=ModelConfig(value_dim=64))
    assert read_metadata(converted)[1] == {"steps": 3}


def test_the_shipped_model_loads_and_carries_its_settings() -> None:
    path = default_model_path()
    assert path is not None and path.name == "xrayvos_default.safetensors"
    model, info = load_checkpoint(path)
    assert model.config == ModelConfig() and info["trained"] and info["steps"] == 7500
    assert info["settings"] == {"decision": "area-prior", "threshold": 0.35, "temporal_blend": 0.85,
                                "support_warp": 0.15}
    assert [stage["config"] for stage in info["stages"]] == ["models/recipe/1_pretrain.json",
                                                            "models/recipe/2_detail.json"]
    # How probabilities become labels is carried under "settings" only, nowhere else in the info.
    assert set(info) == {"trained", "steps", "stages", "note", "settings", "calibration", "init", "init_info",
                         "train_config"}
    assert RunSettings.from_model(path) == RunSettings(threshold=0.35)


def test_corrupt_missing_or_foreign_files_raise_model_error(network: LocalMatchingNetwork, tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", network)
    data = good.read_bytes()
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00not a checkpoint" * 10)
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    for name in ("garbage", "truncated"):
        with pytest.raises(ModelError, match="not a readable safetensors checkpoint"):
            load_checkpoint(tmp_path / f"{name}.safetensors")
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ModelError, match="no XRayVOS config"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_torchscript_and_eager_agree(network: LocalMatchingNetwork) -> None:
    accel = AcceleratedNetwork(network, enabled=True)
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 1, 48, 64, generator=g)
    masks = (torch.rand(1, 2, 48, 64, generator=g) > 0.6).float()
    with torch.inference_mode():
        q_eager = network.encode_query(image)
        q_jit = accel.encode_query(image)
        assert accel.enabled, "tracing fell back to eager: nothing was compared"
        torch.testing.assert_close(q_jit.key, q_eager.key, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(q_jit.feature, q_eager.feature, rtol=1e-4, atol=1e-4)
        v_eager = network.encode_value(q_eager, masks)
        torch.testing.assert_close(accel.encode_value(q_jit, masks), v_eager, rtol=1e-4, atol=1e-4)
        readout = torch.randn(1, 2, network.config.value_dim, 3, 4, generator=g)
        eager_logits = network.decoder(readout, q_eager, (48, 64))
        torch.testing.assert_close(accel.decode(readout, q_jit), eager_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("key_dim", "64", "key_dim must hold integers from 1 to 4096, got '64'"),
    ("key_dim", -1, "key_dim must hold integers from 1 to 4096, got -1"),
    ("value_dim", 0, "value_dim must hold integers"),
    ("projection_dim", True, "projection_dim must hold integers"),
    ("value_dim", 10**9, "value_dim must hold integers from 1 to 4096, got 1000000000"),
    ("key_dim", 64.5, "key_dim must hold integers"),
    ("mask_encoder_channels", [16, "32", 64, 128], "mask_encoder_channels must hold integers .* got '32'"),
    ("mask_encoder_channels", [16, 32.0, 64, 128], "mask_encoder_channels must hold integers .* got 32.0"),
    ("decoder_channels", "abc", "decoder_channels must be a list of 3 widths, got 'abc'"),
    ("decoder_channels", [64, -48, 16], "decoder_channels must hold integers .* got -48"),
    ("norm_mean", float("nan"), "norm_mean must be a finite number, got nan"),
    ("norm_std", "0.2", "norm_std must be a finite number"),
    ("norm_std", 0, "norm_std must be positive, got 0"),
])
def test_config_types_and_ranges_are_checked_on_load(network: LocalMatchingNetwork, tmp_path: Path, field: str,
                                                     value, message: str) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", network)
    bad = _rewrite(good, tmp_path / "bad.safetensors", lambda c: c.update({field: value}))
    for read in (load_checkpoint, read_metadata):
        with pytest.raises(ModelError, match=f"^model file {bad}: {message}") as caught:
            read(bad)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("info, message", [
    ("[1, 2]", "its info metadata must be a JSON object, got list"),
    ('{"settings": [0.5]}', "carried settings must be a JSON object, got list"),
    ('{"settings": {"threshold": "high"}}', "settings: setting threshold must be a number strictly between 0 and 1"),
    ('{"settings": {"temporal_blend": 1.5}}', "settings: setting temporal_blend must be a number in"),
    ('{"settings": {"method": "flow"}}', r"carries settings \['method'\] a model may not carry"),
])
def test_info_and_carried_settings_are_checked_on_load(network: LocalMatchingNetwork, tmp_path: Path, info: str,
                                                       message: str) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", network)
    bad = _rewrite(good, tmp_path / "bad.safetensors", meta_edit=lambda m: m.update(info=info))
    for read in (load_checkpoint, read_metadata):
        with pytest.raises(ModelError, match=f"model file {bad}.*{message}"):
            read(bad)
    with pytest.raises(ModelError, match="model file"):
        Propagator.load(bad, RunSettings(device="cpu"), accelerate=False)


def _poison(tensors: dict) -> None:
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[1] = float("nan")


def test_nan_weights_are_refused_on_load_and_never_written(network: LocalMatchingNetwork, tmp_path: Path,
                                                            davis_root: Path) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", network, {"trained": True})
    nan = _rewrite(good, tmp_path / "nan.safetensors", tensor_edit=_poison)
    with pytest.raises(ModelError, match=f"model file {nan}: 1 weight tensor.*hold NaN or infinite values"):
        load_checkpoint(nan)
    with pytest.raises(ModelError, match="NaN or infinite"):  # nor copied under new metadata
        rewrite_info(nan, tmp_path / "copy.safetensors", {"trained": True})
    assert not (tmp_path / "copy.safetensors").exists()
    # Through the real command: refused before the output folder exists, so no frame is written.
    out = tmp_path / "masks"
    cine, mask = davis_root / "JPEGImages" / "synth_0000", davis_root / "Annotations" / "synth_0000" / "00000.png"
    done = subprocess.run([sys.executable, "-m", "XRayVOSLib", "propagate", str(cine), "--support", f"0:{mask}",
                           "--out", str(out), "--model", str(nan), "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "NaN or infinite values" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
    # A network that diverged, or overflows fp16 on export, is not written at all.
    big = LocalMatchingNetwork().eval()
    with torch.no_grad():
        next(iter(big.parameters())).view(-1)[0] = 1e6  # finite in fp32, inf in fp16
    save_checkpoint(tmp_path / "big32.safetensors", big)
    with pytest.raises(ModelError, match="NaN or infinite"):
        save_checkpoint(tmp_path / "big16.safetensors", big, half=True)
    assert not (tmp_path / "big16.safetensors").exists() and not list(tmp_path.glob(".big16*"))


def test_writes_are_atomic_and_follow_no_symlink(network: LocalMatchingNetwork, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    # A symlink at the target is replaced by the new file, not written through.
    (tmp_path / "m.safetensors").symlink_to(victim)
    path = save_checkpoint(tmp_path / "m.safetensors", network)
    assert not path.is_symlink() and read_metadata(path)[0] == network.config and victim.read_text() == "not yours"
    # The old fixed temporary name, planted as a link, is not followed either (the temp name is fresh, O_EXCL).
    (tmp_path / "n.safetensors.partial").symlink_to(victim)
    save_checkpoint(tmp_path / "n.safetensors", network)
    assert victim.read_text() == "not yours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "n.safetensors", "n.safetensors.partial",
                                                          "victim.txt"]  # no temporary file left behind
    # A folder where the file should go: an OSError, and nothing is left beside it.
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "dir.safetensors", network)
    assert len(list(tmp_path.iterdir())) == 5
