"""The refiner's previous-frame prior (model config v4): off for older checkpoints, added without changing a
trained model, local, trained through the clip step, and fed by the engine with the support mask and then
each frame's own probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.inference.accelerate import AcceleratedNetwork
from XRayVOSLib.inference.engine import EngineSettings
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.model.checkpoint import load_checkpoint, save_checkpoint
from XRayVOSLib.model.config import CONFIG_VERSION, ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork, aggregate_probabilities
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.loop import add_refine_prior, build_network
from XRayVOSLib.training.step import ClipStep

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def prior_network(seed: int) -> LocalMatchingNetwork:
    """A refiner network whose prior branch is not the zero init (as after training)."""
    torch.manual_seed(seed)
    net = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True)).eval()
    torch.nn.init.normal_(net.decoder.refine.out.weight, std=0.5)
    torch.nn.init.normal_(net.decoder.refine.prior_conv.weight, std=0.5)
    return net


def test_configs_before_v4_have_no_prior_and_a_prior_needs_the_refiner() -> None:
    assert ModelConfig.from_dict({"version": 3, "refine_head": True}).refine_prior is False
    assert ModelConfig.from_dict({"version": 4, "refine_head": True, "refine_prior": True}).refine_prior is True
    with pytest.raises(ModelError, match="refine_prior needs refine_head"):
        ModelConfig(refine_prior=True)
    with pytest.raises(InputError, match="refine_prior needs refine_head"):
        TrainConfig(refine_prior=True)


def test_adding_the_prior_keeps_a_trained_refiners_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = LocalMatchingNetwork(ModelConfig(refine_head=True)).eval()
    torch.nn.init.normal_(old.decoder.refine.out.weight, std=0.5)
    upgraded = add_refine_prior(old).eval()
    image, masks = torch.rand(1, 1, 48, 64), (torch.rand(1, 2, 48, 64) > 0.7).float()
    with torch.no_grad():
        q_old, q_new = old.encode_query(image), upgraded.encode_query(image)
        before = old.segment(q_old, q_old.key[:, None], old.encode_value(q_old, masks)[:, None])[1]
        after = upgraded.segment(q_new, q_new.key[:, None], upgraded.encode_value(q_new, masks)[:, None],
                                 prior=torch.rand(1, 2, 48, 64))[1]
    assert torch.equal(before, after)
    # From a v3 checkpoint, a training config asking for the prior adds it, and it round-trips at the current version.
    path = save_checkpoint(tmp_path / "v3.safetensors", old)
    net, _ = build_network(TrainConfig(init=str(path), refine_head=True, refine_prior=True))
    assert net.config.refine_prior and net.config.version == CONFIG_VERSION
    net.decoder.refine.prior_conv.bias.data.fill_(0.5)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "v4.safetensors", net))
    assert torch.equal(loaded.decoder.refine.prior_conv.bias, net.decoder.refine.prior_conv.bias)


def test_prior_acts_locally_and_traced_decoding_matches_eager() -> None:
    net = prior_network(1)
    image = torch.rand(1, 1, 64, 64)
    readout = torch.randn(1, 2, net.config.value_dim, 4, 4)
    prior = torch.zeros(1, 2, 64, 64)
    with torch.no_grad():
        q = net.encode_query(image)
        base = net.decoder(readout, q, (64, 64), prior)
        poked = prior.clone()
        poked[0, 1, 40, 12] = 1.0  # object 2 was here on the previous frame
        moved = (net.decoder(readout, q, (64, 64), poked) - base).abs() > 1e-6  # 1, K, H, W
        assert moved[0, 1, 40, 12] and not moved[0, 0].any()  # that object only...
        rows, cols = torch.nonzero(moved[0, 1], as_tuple=True)
        assert rows.min() >= 40 - 9 and rows.max() <= 40 + 9 and cols.max() <= 12 + 9  # ...and near that pixel
        accelerated = AcceleratedNetwork(net)
        traced = accelerated.decode(readout, accelerated.encode_query(image), poked)
        torch.testing.assert_close(traced, net.decoder(readout, q, (64, 64), poked), atol=1e-4, rtol=1e-4)


def test_clip_step_trains_the_prior_branch() -> None:
    torch.manual_seed(3)
    net = LocalMatchingNetwork(ModelConfig(refine_head=True, refine_prior=True)).train()
    torch.nn.init.normal_(net.decoder.refine.out.weight, std=0.1)  # the zero init passes no gradient back
    labels = torch.zeros(2, 3, 32, 32, dtype=torch.long)
    labels[:, :, 8:20, 10:14] = 1
    labels[:, :, 20:28, 18:30] = 2
    batch = {"frames": torch.rand(2, 3, 1, 32, 32), "labels": labels, "num_objects": torch.tensor([2, 2])}
    losses = ClipStep(net, TrainConfig(refine_head=True, refine_prior=True, size=32))(batch, step=0)
    total = sum(v for k, v in losses.items() if k.startswith("ce"))
    total.backward()
    assert net.decoder.refine.prior_conv.weight.grad.abs().sum() > 0


def test_engine_feeds_the_support_mask_then_each_frames_own_probabilities() -> None:
    from XRayVOSLib.synth import generate_cine

    cine = generate_cine(seed=99, num_frames=5, size=64)
    net = prior_network(4)
    propagator = Propagator(net, {"trained": False}, torch.device("cpu"), EngineSettings(), accelerate=False)
    seen: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def record(module, args, output):  # args: logits, image, fine, prior (B*K, 1, H, W)
        seen.append(args[3].clone())
        outputs.append(output.clone())

    handle = net.decoder.refine.register_forward_hook(record)
    try:
        pred = propagator.propagate(cine.frames, {0: cine.labels[0]})
    finally:
        handle.remove()
    ids = [int(i) for i in np.unique(cine.labels[0]) if i]
    assert len(seen) == 4 and pred.shape == cine.labels.shape
    support = np.stack([cine.labels[0] == i for i in ids]).astype(np.float32)  # K, H, W
    np.testing.assert_array_equal(seen[0][:, 0].numpy(), support)
    for previous, prior in zip(outputs[:-1], seen[1:]):
        # The previous frame's soft-aggregated object probabilities, not its raw logits or its labels.
        expected = aggregate_probabilities(previous[:, 0][None])[0, 1:]  # K, H, W
        torch.testing.assert_close(prior[:, 0], expected, atol=1e-5, rtol=1e-5)
        assert 0.01 < float(prior.max()) and bool(((prior > 0.05) & (prior < 0.95)).any())


MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.skipif(not (MODELS / "xrayvos_refine.safetensors").is_file(), reason="models/ ships no refiner model here")
def test_shipped_refiner_model_carries_a_trained_prior() -> None:
    net, info = load_checkpoint(MODELS / "xrayvos_refine.safetensors")
    assert net.config.refine_prior and info["trained"]
    assert net.decoder.refine.prior_conv.weight.abs().sum() > 0  # trained, not the zero init


def test_committed_training_configs_load_and_chain() -> None:
    """Every stage config in models/ is valid, and each stage that starts from another's output names it."""
    configs = {p.name: TrainConfig.load(p) for p in sorted(MODELS.glob("*_config.json"))}
    assert {"pretrain_config.json", "refine_config.json", "prior_config.json", "prior2_config.json",
            "contact_config.json"} <= set(configs)
    outputs = {f"{c.out_dir}/model.safetensors" for c in configs.values()}
    assert configs["prior_config.json"].init in outputs
    assert configs["prior2_config.json"].init in outputs
    assert configs["prior2_config.json"].refine_prior
    assert configs["contact_config.json"].init in outputs and configs["contact_config.json"].losses.contact_weight > 0
