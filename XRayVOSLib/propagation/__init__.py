"""The torch-free propagation core, shared by the network engine and the baselines.

    types     ProgressFn, CancelToken, check_cancel, the PropagationMethod protocol
    validate  checks on the frames and supports any method is handed
    plan      the passes from each support and each pass's weight on a frame
    merge     one merge of the passes' probabilities per frame (one tie rule)
    decision  probabilities -> labels: the area prior or a fixed object threshold
    flow      DIS optical flow and the one warp (OpenCV), used by fusion and the flow baselines
    fusion    the output fusion of a pass: flow-warped previous result and support mask
    pipeline  the pass loop every method runs: step -> fusion -> merge -> decision
"""
