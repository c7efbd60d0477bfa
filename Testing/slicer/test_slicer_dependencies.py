"""First-use installs (xrayvos_slicer.dependencies): the order as a pure function, the stale-import check,
and both Slicer branches (5.12 slicer.packaging.pip_ensure, 5.10 slicer.util.pip_install) driven through
fakes of what only the Slicer application has (slicer.app, PyTorchUtils, the pip calls)."""

from __future__ import annotations

import sys
import types

import pytest

from xrayvos_slicer import dependencies as D


def _names(requirements) -> list[str]:
    return [D._name(r) for r in requirements]


@pytest.mark.parametrize("method", ["local", "global", "flow", "flow-support", "copy"])
def test_torch_comes_first_and_never_from_pip(method):
    steps = D.steps_for(method, read_files=True, video=True)
    kinds = [s.kind for s in steps]
    assert kinds == (["torch", "pip"] if method in ("local", "global") else ["pip"])
    pip = steps[-1]
    assert "torch" not in _names(pip.requirements) and not pip.torch_dependent
    assert "pydicom>=3.0" in pip.requirements and "av>=11" in pip.requirements
    assert ("safetensors>=0.4" in pip.requirements) == (method in ("local", "global"))


def test_training_installs_torch_before_monai_and_keeps_pip_off_torch():
    steps = D.steps_for_training()
    assert [s.kind for s in steps] == ["torch", "pip"]
    assert steps[0].requirements == (D.TORCH_REQUIREMENT,)
    assert "monai>=1.3" in steps[1].requirements and steps[1].torch_dependent == ("monai>=1.3",)
    assert _names(steps[1].requirements).count("pillow") == 1  # the readers and training both need Pillow
    # A torch-dependent package alone still brings the torch step first; Slicer's own packages never go to pip.
    alone = D.install_steps(["monai>=1.3", "SimpleITK>=2", "requests", "tqdm>=4.60"], needs_torch=False)
    assert [s.kind for s in alone] == ["torch", "pip"] and alone[1].requirements == ("monai>=1.3", "tqdm>=4.60")
    assert D.install_steps(["torch>=2.1"], needs_torch=False) == []


def _module(name: str, version: str | None) -> types.ModuleType:
    module = types.ModuleType(name)
    if version is not None:
        module.__version__ = version
    return module


def test_an_old_version_already_imported_is_found():
    """Slicer 5.10 imports pydicom 2.4.4 at start-up: upgrading on disk leaves it loaded."""
    requirements = D.READER_REQUIREMENTS + D.WORKER_REQUIREMENTS
    loaded = {"pydicom": _module("pydicom", "2.4.4"), "cv2": _module("cv2", "4.5.0"), "PIL": _module("PIL", "11.2.1"),
              "numpy": _module("numpy", None)}
    assert D.stale_imports(requirements, loaded) == [("pydicom>=3.0", "2.4.4"),
                                                     ("opencv-python-headless>=4.8", "4.5.0")]
    assert D.stale_imports(requirements, {"pydicom": _module("pydicom", "3.0.2")}) == []
    assert D.stale_imports(requirements, {}) == []
    assert D.stale_imports(["numpy>=1.24"]) == []  # this interpreter's own numpy
    message = D.restart_message([("pydicom>=3.0", "2.4.4")])
    assert "pydicom 2.4.4 (needs pydicom>=3.0)" in message and "Restart Slicer" in message


class FakeSlicer:
    """What dependencies.py calls on the Slicer application, recording the order of installs."""

    def __init__(self, monkeypatch, testing: bool, packaging: bool, torch_fails: bool = False) -> None:
        import slicer

        self.calls: list[tuple] = []
        self.installed: set[str] = set()
        app = types.SimpleNamespace(testingEnabled=lambda: testing)
        monkeypatch.setattr(slicer, "app", app, raising=False)
        monkeypatch.setattr(slicer.util, "pip_install", self.pip_install)
        monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True)
        monkeypatch.setattr(D, "missing_requirements",
                            lambda reqs: [r for r in reqs if D._name(r) not in self.installed])
        monkeypatch.setattr(D, "stale_imports", lambda reqs, modules=None: [])
        if packaging:
            monkeypatch.setitem(sys.modules, "slicer.packaging", types.SimpleNamespace(pip_ensure=self.pip_ensure))
        else:
            monkeypatch.delitem(sys.modules, "slicer.packaging", raising=False)
        torch_utils = types.ModuleType("PyTorchUtils")

        def install_torch(askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                          torchvisionVersionRequirement=None):
            if torch_fails:
                raise RuntimeError("light-the-torch: no matching distribution")
            self.calls.append(("torch", torchVersionRequirement))
            self.installed.add("torch")
            return types.SimpleNamespace(__version__="2.13")

        torch_utils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=install_torch)
        monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)

    def pip_install(self, requirements, **kwargs):
        assert "torch" in self.installed, "pip ran before PyTorchUtils installed torch"
        self.calls.append(("pip_install", tuple(requirements)))
        self.installed |= {D._name(r) for r in requirements if not r.startswith("-")}

    def pip_ensure(self, requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        assert "torch" in self.installed, "pip ran before PyTorchUtils installed torch"
        self.calls.append(("pip_ensure", tuple(requirements), skip_packages, skip_in_testing))
        self.installed |= {D._name(r) for r in requirements}


def test_slicer_5_10_branch_installs_torch_first_and_monai_without_dependencies(monkeypatch):
    fake = FakeSlicer(monkeypatch, testing=True, packaging=False)
    D.ensure_for_training(confirm=False, install_in_testing=True)
    assert fake.calls[0] == ("torch", ">=2.1")
    assert fake.calls[-1] == ("pip_install", ("--no-deps", "monai>=1.3"))
    plain = fake.calls[1][1]
    assert fake.calls[1][0] == "pip_install" and "monai>=1.3" not in plain and "opencv-python-headless>=4.8" in plain


def test_slicer_5_12_branch_passes_what_testing_mode_needs(monkeypatch):
    fake = FakeSlicer(monkeypatch, testing=True, packaging=True)
    D.ensure_for_training(confirm=False, install_in_testing=True)
    assert fake.calls[0][0] == "torch"
    kind, requirements, skip_packages, skip_in_testing = fake.calls[1]
    assert kind == "pip_ensure" and skip_packages == ["torch"] and skip_in_testing is False  # 5.12 skips otherwise
    assert "monai>=1.3" in requirements


def test_testing_mode_installs_nothing_unless_asked_and_failures_are_the_modules_errors(monkeypatch):
    fake = FakeSlicer(monkeypatch, testing=True, packaging=True)
    with pytest.raises(D.DependencyError, match="testing mode.*PyTorch is missing"):
        D.ensure_for("local", confirm=False)
    with pytest.raises(D.DependencyError, match="testing mode.*opencv-python-headless"):
        D.ensure_for("flow", confirm=False)
    assert fake.calls == []
    FakeSlicer(monkeypatch, testing=False, packaging=True, torch_fails=True)
    with pytest.raises(D.DependencyError, match="installing PyTorch through the PyTorch extension failed: "
                                                "light-the-torch: no matching distribution"):
        D.ensure_for("local", confirm=False)
