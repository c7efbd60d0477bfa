"""XRayVOS's self-test in real Slicer (Slicer runs XRayVOSTest from the module file, which imports it).

It drives the module's logic (module_logic.XRayVOSLogic), never the module file itself: no import cycle.
Its Python packages are installed (or confirmed) before anything imports them: Slicer ships no OpenCV,
which the synthetic cine needs. The network part (local, a fixed threshold, fine-tuning) runs where
PyTorch is installed, or with XRAYVOS_SELF_TEST_NETWORK=1, which installs it through the PyTorch
extension first; the last message names every part that ran. The DICOM SEG part writes the synthetic cine
as an XA file, loads it through Slicer's DICOM database (a temporary one), exports the result with Export to
DICOM's logic and loads the SEG back.
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
        ran.append("DICOM SEG through the DICOM database" if self.dicomSegThroughTheDatabase(cine) else
                   "DICOM SEG skipped: restart Slicer (an older pydicom was imported at start-up)")
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

    def dicomSegThroughTheDatabase(self, cine) -> bool:
        """The cine as XA DICOM in a temporary DICOM database, loaded by Slicer's DICOMImageSequencePlugin; the
        flow result exported as a DICOM SEG (inserted into the database) and loaded back, equal frame by frame.
        False where the packages are installed but take effect only after a restart (Slicer 5.10's pydicom)."""
        import tempfile

        import numpy as np
        from DICOMLib import DICOMUtils
        from xrayvos_slicer import dependencies

        self.delayDisplay("DICOM SEG: the cine through a temporary DICOM database")
        try:
            dependencies.ensure_for_dicom_seg(confirm=not slicer.app.testingEnabled(), install_in_testing=True)
        except dependencies.RestartNeeded as exc:
            self.delayDisplay(f"DICOM SEG part skipped: {exc}")
            return False
        import pydicom

        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder, DICOMUtils.TemporaryDICOMDatabase(
                os.path.join(folder, "database")) as database:
            os.makedirs(os.path.join(folder, "in"))
            series = write_xa_cine(cine.frames, os.path.join(folder, "in", "cine.dcm"), cine.frame_time * 1000.0)
            DICOMUtils.importDicom(os.path.join(folder, "in"), database)
            loaded = DICOMUtils.loadSeriesByUID([series], enabledPluginClassNames=["DICOMImageSequencePlugin"])
            self.assertTrue(loaded, "Slicer's DICOMImageSequencePlugin loaded nothing")
            logic = XRayVOSLogic()
            browser, sequence = logic.resolve_cine(slicer.mrmlScene.GetNodeByID(loaded[-1]))
            # The frames Slicer read are the file's rows and columns (the SEG references them one to one).
            np.testing.assert_array_equal(logic.cine_frames(browser), cine.frames)
            names = dict(cine.object_names)
            support = logic.set_support(browser, 0, cine.labels[0], names=names)
            result = logic.propagate(browser, support, logic.run_settings(method="flow"), timeout=600)
            done = logic.export_dicom_seg(browser, support, os.path.join(folder, "cine_seg.dcm"))
            self.assertTrue(done.source.from_database and done.in_database)
            uid = str(pydicom.dcmread(str(done.path), stop_before_pixels=True).SOPInstanceUID)
            self.assertTrue(database.fileForInstance(uid), "the SEG is not in the DICOM database")
            back = logic.load_dicom_seg(browser, done.path)
            expected, expectedNames = logic.label_arrays(browser, result)
            labels, backNames = logic.label_arrays(browser, back)
            np.testing.assert_array_equal(labels, expected)
            self.assertEqual((backNames, back.GetAttribute("XRayVOS.SupportFrames")), (expectedNames, "0"))
            self.assertEqual(back.GetNumberOfDataNodes(), sequence.GetNumberOfDataNodes())
        return True


def write_xa_cine(frames, path: str, frame_time_ms: float) -> str:
    """An uncompressed 8-bit X-Ray Angiographic multi-frame file of `frames` [T, H, W]; returns its series UID."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = XRayAngiographicImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyID, ds.AccessionNumber = "XRayVOS^SelfTest", "XRAYVOS-SELFTEST", "1", ""
    ds.StudyDate, ds.StudyTime, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20250101", "120000", "XA", 1, 1
    ds.Manufacturer, ds.ImageType = "XRayVOS self-test", ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    for empty in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "Laterality", "PatientOrientation",
                  "KVP", "XRayTubeCurrent", "ExposureTime", "Exposure"):  # Type 2 / 2C of the XA IOD: present
        setattr(ds, empty, None)
    ds.PixelIntensityRelationship, ds.RadiationSetting, ds.PositionerMotion = "LIN", "GR", "STATIC"
    ds.PositionerPrimaryAngle, ds.PositionerSecondaryAngle = 0, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames, ds.FrameTime, ds.FrameIncrementPointer = len(frames), round(frame_time_ms, 2), 0x00181063
    ds.PixelData = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SeriesInstanceUID)
