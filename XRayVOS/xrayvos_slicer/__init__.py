"""MRML side of the XRayVOS Slicer module: importable with slicer-core alone (no Qt, no slicer.app).

    sequences  cine <-> volume sequence, the browser, frame geometry
    segments   segmentation node <-> numpy label maps, segment metadata
    supports   the support segmentation sequence painted in the Segment Editor
    results    the result segmentation sequence written back after a run
    dicom_export  a result as a DICOM SEG of the cine's DICOM, and a SEG back as a sequence
    export     frames and supports to a compact job folder for the worker
    worker_process  the background `python -m XRayVOSLib.worker` process (start, poll, cancel)
    logic      XRayVOSLogic, the API the widget and scripts use
    models     the bundled and the user's fine-tuned models, with their model cards
    training_cases  reviewed cases from the scene -> a DAVIS folder for fine-tuning
    finetune_logic  FinetuneLogic: checks, the background `xrayvos finetune`, installing the model
    dependencies    first-use installation of torch and the other Python packages (needs real Slicer)
    reloading       developer Reload: the module's packages leave sys.modules

Import the submodules themselves (`from xrayvos_slicer.logic import XRayVOSLogic`): the package imports
nothing, so `import xrayvos_slicer.worker_process` does not pull the MRML libraries in.
"""
