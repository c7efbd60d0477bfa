"""RunSettings (XRayVOSLib/settings.py): defaults, one validate naming the setting, replace, JSON round trip,
and the settings a real model file carries."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.settings import CARRIED_FIELDS, DECISIONS, METHODS, RunSettings


def test_defaults_are_the_shipped_pipeline() -> None:
    s = RunSettings()
    assert (s.method, s.window, s.memory_every, s.max_keyframes, s.device) == ("local", 15, 6, 5, "auto")
    assert (s.decision, s.threshold, s.temporal_blend, s.support_warp) == ("area-prior", 0.5, 0.85, 0.15)
    assert s.uses_network and s.fused
    assert METHODS == ("local", "global", "flow", "flow-support", "copy") and DECISIONS == ("area-prior", "threshold")
    assert not RunSettings(method="flow").uses_network
    assert not RunSettings(temporal_blend=0.0, support_warp=0.0).fused
    assert RunSettings(temporal_blend=0.0).fused  # the support anchor alone is still a fusion
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.window = 7  # type: ignore[misc]


@pytest.mark.parametrize("field, value, wanted", [
    ("window", 4, "positive odd number"),
    ("window", True, "integer >= 1"),
    ("window", 0, "integer >= 1"),
    ("memory_every", 0, "integer >= 1"),
    ("max_keyframes", -1, "integer >= 0"),
    ("method", "nearest", "one of local, global, flow, flow-support, copy"),
    ("device", "mps", "auto, cpu, cuda or cuda:N"),
    ("device", "cuda:x", "auto, cpu, cuda or cuda:N"),
    ("threshold", 1.0, "strictly between 0 and 1"),
    ("threshold", 0.0, "strictly between 0 and 1"),
    ("threshold", "0.4", "strictly between 0 and 1"),
    ("temporal_blend", 1.0, r"in \[0, 1\)"),
    ("support_warp", -0.1, r"in \[0, 1\]"),
    ("support_warp", True, r"in \[0, 1\]"),
    ("decision", "maybe", "one of area-prior, threshold"),
])
def test_validate_names_the_setting_and_what_it_must_be(field: str, value: object, wanted: str) -> None:
    with pytest.raises(InputError, match=rf"^setting {field} must be [^\n]*{wanted}[^\n]*, got "):
        RunSettings(**{field: value})
    with pytest.raises(InputError, match=rf"setting {field} "):
        RunSettings().replace(**{field: value})  # replace validates too


def test_valid_edges_are_accepted() -> None:
    s = RunSettings(window=1, max_keyframes=0, device="cuda:1", temporal_blend=0.0, support_warp=1.0, threshold=0.01)
    assert s.validate() is s
    assert RunSettings(device="cpu").device == "cpu" and RunSettings(device="cuda").device == "cuda"


def test_replace_keeps_what_is_none_and_refuses_unknown_names() -> None:
    base = RunSettings(window=7, decision="threshold", threshold=0.35)
    changed = base.replace(method="flow", window=None, threshold=None, decision=None)
    assert (changed.method, changed.window, changed.decision, changed.threshold) == ("flow", 7, "threshold", 0.35)
    assert base.method == "local"  # a copy: the original is unchanged
    assert base.replace() == base
    with pytest.raises(InputError, match=r"unknown setting\(s\) matching"):
        base.replace(matching="local")  # the old name of `method`


def test_to_dict_and_from_dict_round_trip_through_json() -> None:
    s = RunSettings(method="global", window=9, memory_every=3, max_keyframes=2, device="cpu", decision="threshold",
                    threshold=0.3, temporal_blend=0.5, support_warp=0.25)
    data = json.loads(json.dumps(s.to_dict()))
    assert set(data) == {f.name for f in dataclasses.fields(RunSettings)}
    assert RunSettings.from_dict(data) == s
    assert RunSettings.from_dict({}) == RunSettings()  # missing keys keep the defaults
    assert RunSettings.from_dict({"window": 3}, base=s) == s.replace(window=3)  # ... or the base's
    assert s.carried() == {"decision": "threshold", "threshold": 0.3, "temporal_blend": 0.5, "support_warp": 0.25}
    assert tuple(s.carried()) == CARRIED_FIELDS


def test_from_dict_names_the_source_and_the_bad_key() -> None:
    with pytest.raises(InputError, match=r"^job\.json: unknown setting\(s\) matching, stride$"):
        RunSettings.from_dict({"window": 7, "stride": 8, "matching": "local"}, source="job.json")
    with pytest.raises(InputError, match=r"^job\.json: setting window must be .*odd.*, got 4$"):
        RunSettings.from_dict({"window": 4}, source="job.json")
    with pytest.raises(InputError, match="job.json: settings must be a JSON object, got list"):
        RunSettings.from_dict([["window", 7]], source="job.json")  # type: ignore[arg-type]


def _model(path: Path, info: dict) -> Path:
    import torch

    from XRayVOSLib.model.checkpoint import save_checkpoint
    from XRayVOSLib.model.network import LocalMatchingNetwork

    torch.manual_seed(0)
    return save_checkpoint(path, LocalMatchingNetwork(), info=info, half=True)


def test_from_model_reads_a_model_files_carried_settings(tmp_path: Path, monkeypatch) -> None:
    carried = {"decision": "threshold", "threshold": 0.4, "temporal_blend": 0.6, "support_warp": 0.0}
    path = _model(tmp_path / "m.safetensors", {"trained": True, "settings": carried})
    s = RunSettings.from_model(path)
    assert s.carried() == carried
    assert (s.method, s.window, s.memory_every) == ("local", 15, 6)  # what the model does not carry: defaults
    over = RunSettings.from_model(str(path), window=7, threshold=0.3, decision=None, method="global")
    assert (over.window, over.threshold, over.decision, over.method) == (7, 0.3, "threshold", "global")
    # a model that carries nothing, and the shipped-model lookup through $XRAYVOS_MODEL
    bare = _model(tmp_path / "bare.safetensors", {"trained": True})
    assert RunSettings.from_model(bare) == RunSettings()
    monkeypatch.setenv("XRAYVOS_MODEL", str(path))
    assert RunSettings.from_model(None) == s
    # a file that is not an XRayVOS model carries nothing (loading it is what names it)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"not a checkpoint")
    assert RunSettings.from_model(foreign) == RunSettings()


def test_from_model_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model file .*absent\.safetensors does not exist"):
        RunSettings.from_model(tmp_path / "absent.safetensors")
    bad = _model(tmp_path / "bad.safetensors", {"settings": {"threshold": 2.0}})
    with pytest.raises(InputError, match=rf"model {bad}: setting threshold must be"):
        RunSettings.from_model(bad)
    stale = _model(tmp_path / "stale.safetensors", {"settings": {"matching": "local"}})
    with pytest.raises(InputError, match=r"unknown setting\(s\) matching"):
        RunSettings.from_model(stale)


def test_importing_settings_loads_neither_numpy_nor_torch() -> None:
    code = ("import sys, XRayVOSLib.settings; s = XRayVOSLib.settings.RunSettings(window=7).replace(method='flow');"
            "s.validate(); XRayVOSLib.settings.RunSettings.from_dict(s.to_dict());"
            "bad = [m for m in ('numpy', 'torch') if m in sys.modules]; sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
