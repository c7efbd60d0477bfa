"""First-use installation of what a run needs, inside real Slicer. Never called at import time.

torch comes from the PyTorch extension (PyTorchUtils picks the CUDA/CPU build that fits the machine);
everything else through `slicer.packaging.pip_ensure` (Slicer >= 5.11; `slicer.pydeps` in some 5.11
previews), or, on older Slicer, a confirmation dialog and `slicer.util.pip_install`. Packages Slicer
ships (SimpleITK, torch, requests) are never installed by pip here. The `flow` and `copy` methods need
no torch at all.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import Iterable

REQUESTER = "XRayVOS"
TORCH_REQUIREMENT = "torch>=2.1"
# What the worker and the cine readers import (XRayVOSLib's runtime imports, minus training-only ones).
WORKER_REQUIREMENTS = ["numpy>=1.24", "opencv-python-headless>=4.8"]
NETWORK_REQUIREMENTS = ["safetensors>=0.4"]
READER_REQUIREMENTS = ["pydicom>=3.0", "pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2.3",
                       "Pillow>=10"]
VIDEO_REQUIREMENTS = ["av>=11"]
# Fine-tuning (training loop, MONAI augmentation, validation metrics) on top of the network's needs.
TRAINING_REQUIREMENTS = ["monai>=1.3", "tqdm>=4.60", "scipy>=1.10", "Pillow>=10"]
SLICER_SHIPS = ["SimpleITK", "torch", "requests"]


class DependencyError(RuntimeError):
    """A needed package is missing and was not (or could not be) installed."""


def missing_requirements(requirements: Iterable[str]) -> list[str]:
    """The requirements not satisfied in this interpreter (name and version range checked)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # very old environments: presence check only
        Requirement = None  # type: ignore[assignment]
    missing = []
    for text in requirements:
        name, spec = text, None
        if Requirement is not None:
            requirement = Requirement(text)
            name, spec = requirement.name, requirement.specifier
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if spec is not None and not spec.contains(version, prereleases=True):
            missing.append(text)
    return missing


def requirements_for(method: str, read_files: bool = False, video: bool = False) -> list[str]:
    """pip requirements (torch excluded: see ensure_torch) of a method, and of reading cine files."""
    needed = list(WORKER_REQUIREMENTS)
    if method in ("local", "global"):
        needed += NETWORK_REQUIREMENTS
    if read_files:
        needed += READER_REQUIREMENTS
    if video:
        needed += VIDEO_REQUIREMENTS
    return needed


def ensure_packages(requirements: Iterable[str], confirm: bool = True) -> None:
    """Install missing requirements into Slicer's Python, asking first."""
    missing = [r for r in missing_requirements(requirements)
               if r.split(">")[0].split("=")[0].strip().lower() not in {s.lower() for s in SLICER_SHIPS}]
    if not missing:
        return
    import slicer

    ensure = None
    for module_name in ("slicer.packaging", "slicer.pydeps"):
        try:
            ensure = getattr(importlib.import_module(module_name), "pip_ensure", None)
        except ImportError:
            continue
        if ensure is not None:
            break
    try:
        if ensure is not None:
            ensure(missing, skip_packages=SLICER_SHIPS, prompt_install=confirm, requester=REQUESTER)
            return
        if confirm and not slicer.util.confirmOkCancelDisplay(
                f"{REQUESTER} needs these Python packages, which will be downloaded and installed now:\n\n"
                + "\n".join(missing), windowTitle=f"{REQUESTER}: install Python packages"):
            raise DependencyError(f"installation of {', '.join(missing)} was declined")
        slicer.util.pip_install(" ".join(f'"{r}"' if "<" in r or ">" in r else r for r in missing))
    except DependencyError:
        raise
    except Exception as exc:  # declined (RuntimeError from pip_ensure) or pip failed
        raise DependencyError(f"could not install {', '.join(missing)}: {exc}") from exc
    importlib.invalidate_caches()
    still = missing_requirements(missing)
    if still:
        raise DependencyError(f"still missing after installation: {', '.join(still)}; restart Slicer and retry")


def ensure_torch(confirm: bool = True) -> None:
    """torch through the PyTorch extension; a clear message if that extension is not installed."""
    if not missing_requirements([TORCH_REQUIREMENT]):
        return
    try:
        import PyTorchUtils  # the PyTorch extension's module (listed in EXTENSION_DEPENDS)
    except ImportError:
        raise DependencyError(
            "The 'local' and 'global' methods need PyTorch, which XRayVOS installs through the PyTorch "
            "extension, and that extension is not installed. Install 'PyTorch' from the Extensions Manager, "
            "restart Slicer and try again - or choose the 'flow' method, which needs no PyTorch.") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=confirm, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
    if torch is None:
        raise DependencyError("PyTorch was not installed (declined or failed); the 'flow' method needs no PyTorch")
    logging.info("XRayVOS: PyTorch %s installed", getattr(torch, "__version__", "?"))


def ensure_for_training(confirm: bool = True) -> None:
    """Everything a fine-tune needs (it reads PNG frames and trains the network)."""
    ensure_packages(WORKER_REQUIREMENTS + NETWORK_REQUIREMENTS + TRAINING_REQUIREMENTS, confirm)
    ensure_torch(confirm)


def ensure_for(method: str, confirm: bool = True, read_files: bool = False, video: bool = False) -> None:
    """Everything a run with `method` needs (and the cine readers if read_files)."""
    ensure_packages(requirements_for(method, read_files, video), confirm)
    if method in ("local", "global"):
        ensure_torch(confirm)
