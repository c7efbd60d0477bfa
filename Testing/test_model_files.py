"""model_files: a model's header and carried settings read with the standard library alone (Slicer's GUI
reads them before safetensors is installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from XRayVOSLib.model.checkpoint import save_checkpoint
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import read_model_header


def test_header_and_settings_are_read_without_safetensors_numpy_or_torch(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", LocalMatchingNetwork(),
                           {"trained": True, "settings": {"decision": "threshold", "threshold": 0.42}})
    code = ("import sys\n"
            "for name in ('safetensors', 'numpy', 'torch'): sys.modules[name] = None  # importing them fails\n"
            "from XRayVOSLib.model_files import read_model_header\n"
            "from XRayVOSLib.settings import RunSettings\n"
            f"config, info = read_model_header({str(path)!r})\n"
            "assert config['version'] == 6 and info['trained'] is True, (config, info)\n"
            f"s = RunSettings.from_model({str(path)!r})\n"
            "assert (s.decision, s.threshold, s.temporal_blend) == ('threshold', 0.42, 0.85), s\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_foreign_truncated_and_missing_files_are_not_models(tmp_path: Path) -> None:
    (tmp_path / "text.safetensors").write_text("not a checkpoint at all")
    (tmp_path / "huge.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
    (tmp_path / "cut.safetensors").write_bytes((500).to_bytes(8, "little") + b'{"__metadata__": {"form')
    (tmp_path / "other.safetensors").write_bytes((30).to_bytes(8, "little") + b'{"__metadata__": {"a": "b"}}  ')
    listed = b'{"__metadata__": {"format": "xrayvos-checkpoint", "config": "{}", "info": "[1, 2]"}}'
    (tmp_path / "list.safetensors").write_bytes(len(listed).to_bytes(8, "little") + listed)
    for name in ("text", "huge", "cut", "other", "list", "absent"):
        assert read_model_header(tmp_path / f"{name}.safetensors") is None, name
