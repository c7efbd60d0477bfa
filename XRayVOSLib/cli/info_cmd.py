"""`xrayvos info`: versions, devices, and which model `propagate` would use (trained or not, its config)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from XRayVOSLib import __version__


def collect(model: str | None = None) -> dict[str, Any]:
    """Everything `info` prints, as a dict (also used by bug reports and the Slicer module)."""
    import torch

    from XRayVOSLib.errors import ModelError
    from XRayVOSLib.inference.propagator import default_model_path
    from XRayVOSLib.model.checkpoint import read_metadata
    from XRayVOSLib.model.config import ModelConfig

    data: dict[str, Any] = {
        "xrayvos": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "default_device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    path = Path(model) if model else default_model_path()
    data["model_path"] = str(path) if path else None
    if path is None:
        data.update(model_trained=False, model_status="no checkpoint found: propagate would use UNTRAINED weights",
                    model_config=ModelConfig().to_dict(), model_info={})
        return data
    try:
        config, info = read_metadata(path)
    except ModelError as exc:
        data.update(model_trained=False, model_status=f"unusable: {exc}", model_config=None, model_info={})
        return data
    trained = bool(info.get("trained", True))
    data.update(model_trained=trained, model_status="trained" if trained else "UNTRAINED (info says trained=false)",
                model_config=config.to_dict(), model_info=info, model_size_mb=round(path.stat().st_size / 2**20, 2))
    return data


def run(args: argparse.Namespace) -> int:
    data = collect(args.model)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(f"xrayvos        {data['xrayvos']} (Python {data['python']}, {data['platform']})")
    print(f"torch          {data['torch']}, {data['torch_threads']} CPU threads")
    cuda = ", ".join(data["cuda_devices"]) if data["cuda_available"] else "not available"
    print(f"CUDA           {cuda}; --device auto -> {data['default_device']}")
    print(f"model          {data['model_path'] or '(none)'}")
    print(f"status         {data['model_status']}")
    if data.get("model_size_mb") is not None:
        print(f"size           {data['model_size_mb']} MB")
    if data["model_config"]:
        print("config         " + ", ".join(f"{k}={v}" for k, v in data["model_config"].items()))
    for key, value in data["model_info"].items():
        text = value if isinstance(value, str) else json.dumps(value)
        print(f"info.{key:<9} {text if len(text) < 200 else text[:197] + '...'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="versions, devices, and the model propagate would use",
                                   description="Print versions, device availability and the default model's "
                                               "path, trained status, config and metadata.")
    parser.add_argument("--model", metavar="PATH", help="describe this checkpoint instead of the default")
    parser.add_argument("--json", action="store_true", help="print the same as JSON")
    parser.set_defaults(func=run)
