"""The Propagator API on real (untrained, seeded) forward passes: supports, the pass plan, progress, cancel, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from XRayVOSLib.errors import CancelledError, InputError
from XRayVOSLib.inference.engine import InferenceCore
from XRayVOSLib.inference.propagator import Propagator
from XRayVOSLib.io import LazyFrames
from XRayVOSLib.methods import make_method
from XRayVOSLib.model.network import LocalMatchingNetwork, aggregate_probabilities, soft_aggregate
from XRayVOSLib.propagation.plan import plan_passes
from XRayVOSLib.settings import RunSettings
from cine_helpers import discs


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def network() -> LocalMatchingNetwork:
    torch.manual_seed(0)
    return LocalMatchingNetwork().eval()


@pytest.fixture(scope="module")
def prop(network: LocalMatchingNetwork) -> Propagator:
    return Propagator.load(network, RunSettings(device="cpu"), accelerate=False)


def test_supports_are_returned_bit_identical_with_their_ids_and_dtype(prop: Propagator) -> None:
    frames, labels = discs(5)
    relabel = np.array([0, 3, 7], np.uint16)
    supports = {1: relabel[labels[1]], 4: relabel[labels[4]]}
    out = prop.propagate(frames, supports)
    assert out.shape == frames.shape and out.dtype == np.uint16
    for t, mask in supports.items():
        assert np.array_equal(out[t], mask)
    assert set(np.unique(out)) <= {0, 3, 7}
    # The generator hands back the very arrays it was given for support frames.
    yielded = dict(prop.iter_propagate(frames, supports))
    assert all(yielded[t] is not None and np.array_equal(yielded[t], m) and yielded[t].dtype == np.uint16
               for t, m in supports.items())


@pytest.mark.parametrize("objects", [1, 3])
def test_inference_aggregation_equals_soft_aggregation(objects: int) -> None:
    logits = torch.randn(2, objects, 24, 32, generator=torch.Generator().manual_seed(objects)) * 6
    logits[0, :, 0, 0] = 40.0  # saturated: the clamp matters
    logits[0, :, 0, 1] = -40.0
    _, reference = soft_aggregate(logits)
    probs = aggregate_probabilities(logits)
    assert probs.shape == (2, objects + 1, 24, 32)
    torch.testing.assert_close(probs, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 24, 32))


def test_real_run_visits_frames_as_planned(prop: Propagator, monkeypatch) -> None:
    frames, labels = discs(9)
    supports = {2: labels[2], 6: labels[6]}
    visits: list[tuple[int, int]] = []
    real_start, real_step = InferenceCore.start_pass, InferenceCore.step
    source: list[int] = []
    monkeypatch.setattr(InferenceCore, "start_pass", lambda self, p: (source.append(p.source), real_start(self, p))[1])
    monkeypatch.setattr(InferenceCore, "step", lambda self, t: (visits.append((t, source[-1])), real_step(self, t))[1])
    calls: list[tuple[int, int]] = []
    out = prop.propagate(frames, supports, progress=lambda d, n: calls.append((d, n)))
    planned = [(t, p.source) for p in plan_passes(9, [2, 6]) for t in p.targets]
    assert visits == planned
    counts = np.bincount([t for t, _ in visits], minlength=9)
    assert counts.tolist() == [1, 1, 0, 2, 2, 2, 0, 1, 1]
    assert calls == [(i, len(planned)) for i in range(1, len(planned) + 1)]  # progress reaches total
    assert out.shape == frames.shape
    # iter_probabilities hands over the merged probabilities of every non-support frame, background first
    probs = dict(prop.iter_probabilities(frames, supports))
    assert sorted(probs) == [0, 1, 3, 4, 5, 7, 8]
    assert all(p.shape == (3, 64, 64) and p.dtype == np.float32 for p in probs.values())
    np.testing.assert_allclose(probs[4].sum(0), 1.0, atol=2 / 255)


def test_generator_yields_every_frame_exactly_once(prop: Propagator) -> None:
    frames, labels = discs(6)
    order = [t for t, _ in prop.iter_propagate(frames, {0: labels[0], 5: labels[5]})]
    assert order[:2] == [0, 5]
    assert sorted(order) == list(range(6))


def test_lazy_frames_give_the_same_labels_as_an_array(prop: Propagator) -> None:
    frames, labels = discs(4)
    reads: list[int] = []
    lazy = LazyFrames(4, (64, 64), np.uint8, lambda i: reads.append(i) or frames[i])
    assert np.array_equal(prop.propagate(lazy, {0: labels[0]}), prop.propagate(frames, {0: labels[0]}))
    assert set(reads) == {0, 1, 2, 3}


@pytest.mark.parametrize("cancel_at", [1, 3])
def test_cancel_stops_within_one_frame(prop: Propagator, cancel_at: int) -> None:
    frames, labels = discs(7)
    cancel = threading.Event()
    done: list[int] = []

    def progress(d: int, n: int) -> None:
        done.append(d)
        if d == cancel_at:
            cancel.set()

    with pytest.raises(CancelledError, match="cancelled"):
        prop.propagate(frames, {0: labels[0]}, progress=progress, cancel=cancel)
    assert cancel_at <= max(done) <= cancel_at + 1


def test_cancel_before_start_runs_no_frame(prop: Propagator) -> None:
    frames, labels = discs(4)
    cancel = threading.Event()
    cancel.set()
    done: list[int] = []
    with pytest.raises(CancelledError):
        prop.propagate(frames, {0: labels[0]}, progress=lambda d, n: done.append(d), cancel=cancel)
    assert done == []


def _bad_inputs() -> dict[str, tuple]:
    frames, labels = discs(3)
    nan_frames = frames.astype(np.float32)
    nan_frames[1, 5, 5] = np.nan
    return {
        "single frame": (frames[:1], {0: labels[0]}, "at least 2 frames"),
        "rgb frames": (np.stack([frames] * 3, axis=-1), {0: labels[0]}, "colour"),
        "wrong-size mask": (frames, {0: labels[0][:, :-2]}, "nothing is resized"),
        "empty mask": (frames, {0: np.zeros_like(labels[0])}, "empty"),
        "nan frames": (nan_frames, {0: labels[0]}, "NaN"),
        "support out of range": (frames, {3: labels[0]}, "out of range"),
        "negative support": (frames, {-1: labels[0]}, "out of range"),
        "no supports": (frames, {}, "at least one support"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_inputs_raise_input_error_naming_the_problem(prop: Propagator, case: str) -> None:
    frames, supports, message = _bad_inputs()[case]
    with pytest.raises(InputError, match=message):
        prop.propagate(frames, supports)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_input_error(network: LocalMatchingNetwork) -> None:
    with pytest.raises(InputError, match="no CUDA GPU"):
        Propagator.load(network, RunSettings(device="cuda"))
    with pytest.raises(InputError, match="no CUDA GPU"):
        make_method(RunSettings(method="local", device="cuda"))


def test_the_network_is_built_from_settings_only(network: LocalMatchingNetwork) -> None:
    with pytest.raises(InputError, match="'flow' is a baseline"):
        Propagator.load(network, RunSettings(method="flow"))
    with pytest.raises(TypeError):
        Propagator.load(network, window=7)  # no keyword options besides settings and accelerate
    glob = Propagator.load(network, RunSettings(method="global", device="cpu", window=3), accelerate=False)
    assert glob.name == "global" and glob.settings.window == 3 and glob.network is network
    assert glob.info == {"trained": True, "source": "in-memory network"} and glob.trained
    assert Propagator.load(network).settings == RunSettings()  # a network object carries no settings


def test_global_and_local_matching_both_run_and_differ(network: LocalMatchingNetwork) -> None:
    frames, labels = discs(4)
    runs = {m: Propagator.load(network, RunSettings(method=m, device="cpu", window=3, decision="threshold",
                                                    temporal_blend=0.0, support_warp=0.0), accelerate=False)
            for m in ("local", "global")}
    probs = {m: dict(r.iter_probabilities(frames, {0: labels[0]}))[3] for m, r in runs.items()}
    assert not np.allclose(probs["local"], probs["global"])  # a 3x3 window is not the whole frame


def test_uint16_frames_work(prop: Propagator) -> None:
    frames, labels = discs(3)
    wide = frames.astype(np.uint16) * 16 + 300  # 12-bit-like detector values
    out = prop.propagate(wide, {0: labels[0]})
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[0], labels[0]) and set(np.unique(out)) <= {0, 1, 2}
    # A linear rescale of the pixel values maps to the same [0, 1] input, so labels match a 16-bit
    # version with another offset and gain exactly.
    assert np.array_equal(prop.propagate(frames.astype(np.uint16) * 32 + 1000, {0: labels[0]}), out)


def test_sizes_not_multiple_of_16_keep_the_input_size(prop: Propagator) -> None:
    frames, labels = discs(3, 70, 90)
    out = prop.propagate(frames, {1: labels[1]})
    assert out.shape == (3, 70, 90)
    assert np.array_equal(out[1], labels[1])
    assert set(np.unique(out)) <= {0, 1, 2}
