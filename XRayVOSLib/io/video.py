"""Video cines (mp4, avi, ...) through PyAV.

A compressed stream can only be decoded forward from a key frame, so the frames are decoded once, in
order, into one grey [T, H, W] array (the luma plane) instead of lazily.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from .types import ASSUMED_FPS, Cine, even_times, require_frames, warn_colour

_DEEP_GREY = ("gray16le", "gray16be", "gray12le", "gray12be", "gray10le", "gray10be")


def _is_colour(frame: av.VideoFrame) -> bool:
    """Real colour, not a grey picture that went through a YUV codec (chroma stays near neutral)."""
    rgb = frame.to_ndarray(format="rgb24").astype(np.int16)
    spread = np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).max(axis=-1)
    return bool(np.mean(spread > 24) > 0.01)  # > 1 % of pixels clearly off the grey axis


def read_video(path: Path) -> Cine:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: file holds no video stream")
        stream = container.streams.video[0]
        deep = (stream.codec_context.pix_fmt or "") in _DEEP_GREY
        grey_format = "gray16le" if deep else "gray"
        frames: list[np.ndarray] = []
        stamps: list[float | None] = []
        colour = False
        try:
            for frame in container.decode(stream):
                if not frames:
                    colour = not (frame.format.name.startswith("gray")) and _is_colour(frame)
                frames.append(frame.to_ndarray(format=grey_format))
                stamps.append(frame.time)
        except av.FFmpegError as exc:
            raise InputError(f"{path}: corrupt video stream after {len(frames)} frames ({exc})") from exc
        rate = float(stream.average_rate) if stream.average_rate else None
        codec = stream.codec_context.name
    require_frames(len(frames), path)
    if colour:
        warn_colour(path)
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise InputError(f"{path}: frame size changes within the video; nothing is resized")

    # Stream time base first (handles variable frame rate), else the declared rate, else assumed.
    assumed = False
    times = np.asarray([np.nan if s is None else s for s in stamps], dtype=np.float64)
    if np.all(np.isfinite(times)) and np.all(np.diff(times) > 0):
        times -= times[0]
    elif rate and rate > 0:
        times = np.arange(len(frames), dtype=np.float64) / rate
    else:
        times, assumed = even_times(len(frames), ASSUMED_FPS), True
    tags: dict[str, object] = {"frame_time_assumed": assumed, "codec": codec, "declared_fps": rate}
    return Cine(np.stack(frames), times, None, "video", tags, path)
