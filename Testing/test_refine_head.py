"""The stride-2 pixel refiner (model config v3): off for older checkpoints, added to a trained model without
changing it, local to the pixels it reads, trainable, and carried through the TorchScript key encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from XRayVOSLib.inference.accelerate import AcceleratedNetwork
from XRayVOSLib.model.checkpoint import load_checkpoint, save_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model.refine import PixelRefiner
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.loop import add_refine_head, build_network

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def segment(net: LocalMatchingNetwork, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """probs 1, K+1, H, W of a frame read back from its own memory."""
    with torch.no_grad():
        q = net.encode_query(image)
        return net.segment(q, q.key[:, None], net.encode_value(q, masks)[:, None])[1]


def test_older_configs_have_no_refiner() -> None:
    assert ModelConfig.from_dict({"version": 2}).refine_head is False
    assert ModelConfig.from_dict({"version": 3, "refine_head": True}).refine_head is True
    assert LocalMatchingNetwork(ModelConfig()).decoder.refine is None


def test_adding_the_refiner_keeps_a_trained_models_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = LocalMatchingNetwork(ModelConfig()).eval()
    image, masks = torch.rand(1, 1, 48, 64), (torch.rand(1, 2, 48, 64) > 0.7).float()
    upgraded = add_refine_head(old).eval()
    assert upgraded.decoder.refine is not None
    assert torch.equal(segment(old, image, masks), segment(upgraded, image, masks))
    # From a checkpoint, a training config asking for it adds it, and the trained head round-trips.
    path = save_checkpoint(tmp_path / "v2.safetensors", old)
    net, _ = build_network(TrainConfig(init=str(path), refine_head=True))
    assert net.config.refine_head and net.config.version >= 3
    net.decoder.refine.out.bias.data.fill_(0.25)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "v3.safetensors", net))
    assert loaded.config.refine_head and torch.equal(loaded.decoder.refine.out.bias, net.decoder.refine.out.bias)


def test_refiner_reads_each_pixel_locally() -> None:
    torch.manual_seed(1)
    refiner = PixelRefiner().eval()
    torch.nn.init.normal_(refiner.out.weight, std=0.5)  # a trained head is not zero
    logits, image, fine = torch.randn(2, 1, 32, 32), torch.rand(1, 1, 32, 32), torch.randn(1, 16, 16, 16)
    with torch.no_grad():
        base = refiner(logits, image, fine)
        poked = image.clone()
        poked[0, 0, 20, 9] += 1.0  # one pixel of the frame
        changed = (refiner(logits, poked, fine) - base).abs().amax(dim=(0, 1)) > 1e-6  # H, W
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed[20, 9]  # the refined logit at that very pixel moves...
    # ...and only within the receptive field: three 3x3 convs at stride 2 reach +-4 cells = +-9 pixels.
    assert rows.min() >= 20 - 9 and rows.max() <= 20 + 9 and cols.min() >= 0 and cols.max() <= 9 + 9
    assert changed.sum() < changed.numel() / 2


def test_refiner_receives_gradient_and_the_traced_encoder_feeds_it() -> None:
    torch.manual_seed(2)
    net = LocalMatchingNetwork(ModelConfig(refine_head=True))
    image, masks = torch.rand(1, 1, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    q = net.encode_query(image)
    logits, _ = net.segment(q, q.key[:, None], net.encode_value(q, masks)[:, None])
    torch.nn.functional.cross_entropy(logits, (torch.rand(1, 32, 32) > 0.5).long()).backward()
    assert net.decoder.refine.out.weight.grad.abs().sum() > 0
    # The stride-2 skip survives the TorchScript key encoder, and the traced refiner matches eager decoding.
    net.eval()
    torch.nn.init.normal_(net.decoder.refine.out.weight, std=0.5)
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        eager = net.encode_query(image)
        assert [s.shape[-1] for s in AcceleratedNetwork(net).encode_query(image).skips] == [8, 16, 32]
        readout = torch.randn(1, 2, net.config.value_dim, 4, 4)
        accelerated = AcceleratedNetwork(net)
        expected = net.decoder(readout, eager, (64, 64))
        torch.testing.assert_close(accelerated.decode(readout, accelerated.encode_query(image)), expected,
                                   atol=1e-4, rtol=1e-4)
        assert any(name == "refine" and fn is not net.decoder.refine for (name, *_), fn in accelerated._cache.items())


REFINE_MODEL = Path(__file__).resolve().parents[1] / "models" / "xrayvos_refine.safetensors"


@pytest.mark.skipif(not REFINE_MODEL.is_file(), reason="models/ ships no refiner model here")
def test_shipped_refiner_model_propagates_a_synthetic_cine() -> None:
    from XRayVOSLib.inference.propagator import Propagator
    from XRayVOSLib.metrics import j_measure
    from XRayVOSLib.synth import generate_cine

    cine = generate_cine(seed=4242, num_frames=6, size=160)
    propagator = Propagator.load(REFINE_MODEL, device="cpu", accelerate=False)
    assert propagator.network.config.refine_head and propagator.trained
    assert propagator.network.decoder.refine.out.weight.abs().sum() > 0  # trained, not the zero init
    pred = propagator.propagate(cine.frames, {0: cine.labels[0]})
    assert np.array_equal(pred[0], cine.labels[0])
    ids = [i for i in np.unique(cine.labels[0]) if i]
    scores = [j_measure(pred[t] == i, cine.labels[t] == i) for t in range(1, 6) for i in ids]
    assert np.mean(scores) > 0.4, scores
