"""First-use installation of what a run needs, inside real Slicer. Never called at import time.

The order is install_steps() (pure, tested): torch first, always, through the PyTorch extension's
PyTorchUtils, which picks the CUDA or CPU build that fits the machine; then the pip packages. A pip
package that depends on torch (MONAI) is installed so that pip cannot swap in a PyPI torch: with torch
in `skip_packages` (Slicer >= 5.12) or with --no-deps (5.10; MONAI needs only numpy and torch).

Slicer versions:
- 5.12 and later: slicer.packaging.pip_ensure. It skips installs in testing mode unless told
  (skip_in_testing=False); XRayVOS decides that itself: nothing is installed in testing mode unless the
  caller passes install_in_testing=True (the self-test does).
- 5.10: no slicer.packaging; a confirmation dialog and slicer.util.pip_install(list of pip arguments).
- Any version: a package already imported at a version the requirement refuses stays loaded after an
  upgrade (Slicer 5.10 imports pydicom 2.4.4 at start-up, the readers need >= 3): stale_imports() finds
  it and RestartNeeded asks for a restart. The flow and copy methods need no torch at all.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUESTER = "XRayVOS"
TORCH_REQUIREMENT = "torch>=2.1"
# What the worker and the cine readers import (XRayVOSLib's runtime imports, minus training-only ones).
WORKER_REQUIREMENTS = ["numpy>=1.24", "opencv-python-headless>=4.8"]
NETWORK_REQUIREMENTS = ["safetensors>=0.4"]
READER_REQUIREMENTS = ["pydicom>=3.0", "pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2.3",
                       "Pillow>=10"]
VIDEO_REQUIREMENTS = ["av>=11"]
SEG_REQUIREMENTS = ["highdicom>=0.28"]  # DICOM SEG export and import (XRayVOSLib.seg), on top of the readers
# Fine-tuning (training loop, MONAI augmentation, validation metrics) on top of the network's needs.
TRAINING_REQUIREMENTS = ["monai>=1.3", "tqdm>=4.60", "scipy>=1.10", "Pillow>=10"]
SLICER_SHIPS = ["SimpleITK", "requests"]  # never reinstalled by pip here
TORCH_DEPENDENT = ["monai"]  # pip packages that require torch
# Import names that differ from the distribution name (for stale_imports).
IMPORT_NAMES = {"opencv-python-headless": "cv2", "pillow": "PIL", "pylibjpeg-libjpeg": "libjpeg",
                "pylibjpeg-openjpeg": "openjpeg"}


class DependencyError(RuntimeError):
    """A needed package is missing and was not (or could not be) installed."""


class RestartNeeded(DependencyError):
    """The right version is installed, but an older one is already imported in this Slicer session."""


@dataclass(frozen=True)
class InstallStep:
    """kind "torch": torch through PyTorchUtils; "pip": the requirements (torch_dependent: those needing torch)."""

    kind: str
    requirements: tuple[str, ...]
    torch_dependent: tuple[str, ...] = ()


def _name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def install_steps(requirements: Iterable[str], needs_torch: bool) -> list[InstallStep]:
    """The installation order: torch (when needed, or needed by a pip package) before any pip package."""
    shipped = {canonicalize_name(n) for n in SLICER_SHIPS}
    pip: list[str] = []
    for text in requirements:
        if _name(text) not in shipped | {"torch"} and text not in pip:
            pip.append(text)
    dependent = tuple(r for r in pip if _name(r) in {canonicalize_name(n) for n in TORCH_DEPENDENT})
    steps = [InstallStep("torch", (TORCH_REQUIREMENT,))] if needs_torch or dependent else []
    if pip:
        steps.append(InstallStep("pip", tuple(pip), dependent))
    return steps


def requirements_for(method: str, read_files: bool = False, video: bool = False) -> list[str]:
    """pip requirements (torch excluded: see install_steps) of a method, and of reading cine files."""
    needed = list(WORKER_REQUIREMENTS)
    if method in ("local", "global"):
        needed += NETWORK_REQUIREMENTS
    if read_files:
        needed += READER_REQUIREMENTS
    if video:
        needed += VIDEO_REQUIREMENTS
    return needed


def steps_for(method: str, read_files: bool = False, video: bool = False) -> list[InstallStep]:
    return install_steps(requirements_for(method, read_files, video), needs_torch=method in ("local", "global"))


def steps_for_training() -> list[InstallStep]:
    """A fine-tune reads PNG frames and trains the network."""
    return install_steps(WORKER_REQUIREMENTS + NETWORK_REQUIREMENTS + TRAINING_REQUIREMENTS, needs_torch=True)


def missing_requirements(requirements: Iterable[str]) -> list[str]:
    """The requirements not satisfied in this interpreter (name and version range checked)."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def stale_imports(requirements: Iterable[str], modules: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(requirement, version imported in this process) for every requirement whose module is already
    imported at a version the requirement refuses. modules: default sys.modules."""
    modules = sys.modules if modules is None else modules
    stale = []
    for text in requirements:
        name = _name(text)
        module = modules.get(IMPORT_NAMES.get(name, name.replace("-", "_")))
        version = getattr(module, "__version__", None)
        if isinstance(version, str) and not Requirement(text).specifier.contains(version, prereleases=True):
            stale.append((text, version))
    return stale


def restart_message(stale: Iterable[tuple[str, str]]) -> str:
    loaded = ", ".join(f"{text.split('>')[0].split('=')[0]} {version} (needs {text})" for text, version in stale)
    return (f"This Slicer session has already imported {loaded}; the right version is installed but takes "
            "effect only after a restart. Restart Slicer and try again.")


def ensure(steps: Iterable[InstallStep], confirm: bool = True, install_in_testing: bool = False) -> None:
    """Run the steps in order; raises DependencyError (RestartNeeded) with the message for the user."""
    for step in steps:
        if step.kind == "torch":
            ensure_torch(confirm, install_in_testing)
        else:
            ensure_packages(step.requirements, confirm, install_in_testing, step.torch_dependent)


def ensure_for(method: str, confirm: bool = True, read_files: bool = False, video: bool = False,
               install_in_testing: bool = False) -> None:
    """Everything a run with `method` needs (and the cine readers if read_files)."""
    ensure(steps_for(method, read_files, video), confirm, install_in_testing)


def ensure_for_dicom_seg(confirm: bool = True, install_in_testing: bool = False) -> None:
    """Writing and reading DICOM SEGs: the DICOM readers (the source cine is opened) and highdicom."""
    ensure(install_steps(READER_REQUIREMENTS + SEG_REQUIREMENTS, needs_torch=False), confirm, install_in_testing)


def ensure_for_training(confirm: bool = True, install_in_testing: bool = False) -> None:
    ensure(steps_for_training(), confirm, install_in_testing)


def ensure_packages(requirements: Iterable[str], confirm: bool = True, install_in_testing: bool = False,
                    torch_dependent: Iterable[str] = ()) -> None:
    """Install the missing requirements into Slicer's Python (asking first if confirm), then check them."""
    requirements = list(requirements)
    missing = missing_requirements(requirements)
    if missing:
        _install(missing, confirm, install_in_testing, [r for r in torch_dependent if r in missing])
        importlib.invalidate_caches()
        still = missing_requirements(missing)
        if still:
            raise DependencyError(f"still missing after installation: {', '.join(still)}; restart Slicer and retry")
    stale = stale_imports(requirements)
    if stale:
        raise RestartNeeded(restart_message(stale))


def _install(missing: list[str], confirm: bool, install_in_testing: bool, torch_dependent: list[str]) -> None:
    import slicer

    if slicer.app.testingEnabled() and not install_in_testing:
        raise DependencyError(f"Slicer runs in testing mode, where XRayVOS installs nothing unless the test asks: "
                              f"missing {', '.join(missing)}")
    try:
        from slicer.packaging import pip_ensure  # Slicer >= 5.12
    except ImportError:
        pip_ensure = None
    try:
        if pip_ensure is not None:
            pip_ensure(missing, skip_packages=["torch"] if torch_dependent else None, prompt_install=confirm,
                       requester=REQUESTER, skip_in_testing=False)
            return
        # Slicer 5.10: pip_install(requirements) takes one string or a list of pip arguments.
        if confirm and not slicer.util.confirmOkCancelDisplay(
                f"{REQUESTER} needs these Python packages, which will be downloaded and installed now:\n\n"
                + "\n".join(missing), windowTitle=f"{REQUESTER}: install Python packages"):
            raise DependencyError(f"installation of {', '.join(missing)} was declined")
        plain = [r for r in missing if r not in torch_dependent]
        if plain:
            slicer.util.pip_install(plain)
        if torch_dependent:
            slicer.util.pip_install(["--no-deps", *torch_dependent])  # keep PyTorchUtils' torch
    except DependencyError:
        raise
    except Exception as exc:  # declined (RuntimeError from pip_ensure) or pip failed
        raise DependencyError(f"could not install {', '.join(missing)}: {exc}") from exc


def ensure_torch(confirm: bool = True, install_in_testing: bool = False) -> None:
    """torch through the PyTorch extension; a clear message if that extension is missing or the install fails."""
    if not missing_requirements([TORCH_REQUIREMENT]):
        return
    import slicer

    if slicer.app.testingEnabled() and not install_in_testing:
        raise DependencyError("Slicer runs in testing mode, where XRayVOS installs nothing unless the test asks: "
                              "PyTorch is missing")
    try:
        import PyTorchUtils  # the PyTorch extension's module (listed in EXTENSION_DEPENDS)
    except ImportError:
        raise DependencyError(
            "The 'local' and 'global' methods and fine-tuning need PyTorch, which XRayVOS installs through the "
            "PyTorch extension, and that extension is not installed. Install 'PyTorch' from the Extensions "
            "Manager, restart Slicer and try again - or choose the 'flow' method, which needs no PyTorch.") from None
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=confirm, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
    except Exception as exc:  # light-the-torch or pip failed (no network, no matching build, ...)
        raise DependencyError(f"installing PyTorch through the PyTorch extension failed: {exc}; "
                              "the 'flow' method needs no PyTorch") from exc
    if torch is None:
        raise DependencyError("PyTorch was not installed (declined or failed); the 'flow' method needs no PyTorch")
    logging.info("XRayVOS: PyTorch %s installed", getattr(torch, "__version__", "?"))
