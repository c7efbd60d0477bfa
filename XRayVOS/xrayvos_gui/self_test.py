"""XRayVOS's self-test in real Slicer (Slicer runs XRayVOSTest from the module file, which imports it).

It drives the module's logic (module_logic.XRayVOSLogic), never the module file itself: no import cycle.
Its Python packages are installed (or confirmed) before anything imports them: Slicer ships no OpenCV,
which the synthetic cine needs. The network part (local, a fixed threshold, fine-tuning) runs where
PyTorch is installed, or with XRAYVOS_SELF_TEST_NETWORK=1, which installs it through the PyTorch
extension first; the last message names every part that ran.
"""

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from xrayvos_gui.module_logic import XRayVOSLogic

NETWORK_ENV = "XRAYVOS_SELF_TEST_NETWORK"


class XRayVOSTest(ScriptedLoadableModuleTest):
    """Whole workflow on a synthetic cine in real Slicer: load, paint supports, propagate (flow, local), check."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_XRayVOS_workflow()

    def ensureDependencies(self) -> bool:
        """Install what the test runs with (testing mode installs nothing unless asked); True: network too."""
        from xrayvos_slicer import dependencies

        self.delayDisplay("Checking XRayVOS's Python packages (installing what is missing)")
        confirm = not slicer.app.testingEnabled()  # run from the console: ask, as the module does
        dependencies.ensure_for("flow", confirm=confirm, install_in_testing=True)
        network = os.environ.get(NETWORK_ENV) == "1" or not dependencies.missing_requirements(
            [dependencies.TORCH_REQUIREMENT])
        if network:
            dependencies.ensure_for("local", confirm=confirm, install_in_testing=True)
            dependencies.ensure_for_training(confirm=confirm, install_in_testing=True)
        else:
            self.delayDisplay(f"PyTorch is not installed: the network part is skipped (set {NETWORK_ENV}=1 to "
                              "install PyTorch through the PyTorch extension and run it)")
        return network

    def test_XRayVOS_workflow(self):
        network = self.ensureDependencies()  # before the imports below: synth needs OpenCV

        import numpy as np
        from XRayVOSLib.synth import generate_cine

        self.delayDisplay("Generating a synthetic cine")
        cine = generate_cine(seed=7, num_frames=12, size=128)
        logic = XRayVOSLogic()
        browser = logic.add_cine(cine.frames, np.arange(12) * cine.frame_time, cine.spacing, "Synthetic cine")
        sequence = browser.GetMasterSequenceNode()
        self.assertEqual(sequence.GetNumberOfDataNodes(), 12)

        self.delayDisplay("Painting supports on frames 0 and 11")
        names = dict(cine.object_names)
        support = logic.set_support(browser, 0, cine.labels[0], names=names)
        logic.set_support(browser, 11, cine.labels[11], support=support, names=names)
        self.assertEqual(logic.support_frames(browser, support), [0, 11])

        methods = ["flow"] + (["local"] if network else [])
        for method in methods:
            self.delayDisplay(f"Propagating with {method}")
            result = logic.propagate(browser, support, logic.run_settings(method=method, device="cpu"), timeout=600)
            self.assertEqual(result.GetAttribute("XRayVOS.Method"), method)
            self.assertEqual(result.GetNumberOfDataNodes(), 12)
            self.assertTrue(browser.IsSynchronizedSequenceNodeID(result.GetID(), False))
            labels, segmentNames = logic.label_arrays(browser, result)
            self.assertEqual(segmentNames, [names[k] for k in sorted(names)])
            for t in (0, 11):
                np.testing.assert_array_equal(labels[t], cine.labels[t])
            if method == "flow":
                inter = np.logical_and(labels > 0, cine.labels > 0).sum()
                dice = 2 * inter / ((labels > 0).sum() + (cine.labels > 0).sum())
                self.assertGreater(dice, 0.6)
        if "local" in methods:
            self.delayDisplay("Propagating with a fixed object threshold of 0.3")
            settings = logic.run_settings(device="cpu", decision="threshold", threshold=0.3)
            result = logic.propagate(browser, support, settings, timeout=600)
            self.assertEqual(result.GetAttribute("XRayVOS.Decision"), "threshold")
            self.assertEqual(float(result.GetAttribute("XRayVOS.Threshold")), 0.3)
        results = [n for n in slicer.util.getNodesByClass("vtkMRMLSequenceNode")
                   if n.GetAttribute("XRayVOS.Role") == "result"]
        self.assertEqual(len(results), 1, "a re-run must replace the earlier result")
        ran = methods + (["fixed threshold"] if network else [])
        if network:
            self.fineTuneOnTheResult(logic, browser, support, cine)
            ran.append("fine-tune")
        self.delayDisplay("XRayVOS workflow test passed: " + ", ".join(ran)
                          + ("" if network else f" (network part skipped: no PyTorch, {NETWORK_ENV} not set)"))

    def fineTuneOnTheResult(self, logic, browser, support, cine):
        """Accept the result as labels, fine-tune 3 steps into a temporary models folder, propagate with it."""
        import tempfile

        import numpy as np
        from xrayvos_slicer.finetune_logic import FinetuneLogic, FinetuneSettings

        self.delayDisplay("Fine-tuning on the reviewed result")
        with tempfile.TemporaryDirectory() as models_dir:
            finetune = FinetuneLogic(models_dir=models_dir)
            logic.configure_finetune(finetune)
            self.assertEqual(finetune.mark_reviewed(support, [4, 8]), [4, 8])
            path = finetune.finetune(FinetuneSettings(name="self-test", device="cpu", steps=3, size=64, batch_size=2),
                                     cases=[support], timeout=900)
            self.assertIn(str(path), [str(e.path) for e in finetune.available_models()])
            result = logic.propagate(browser, support, logic.run_settings(str(path), device="cpu"), model=str(path),
                                     timeout=600)
            self.assertEqual(result.GetAttribute("XRayVOS.Model"), str(path))
            labels, _names = logic.label_arrays(browser, result)
            np.testing.assert_array_equal(labels[0], cine.labels[0])
