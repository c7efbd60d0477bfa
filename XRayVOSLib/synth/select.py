"""`generate_cine`: one entry point for both generators, chosen by the config's type.

SynthConfig (or None) draws a v1 cine (2D polylines, XRayVOSLib.synth.generate); SynthV2Config draws a v2
cine (3D coronary anatomy through a C-arm, XRayVOSLib.synth.v2). Callers that take a config (the DAVIS
writer, the training loader's `synth_config`) therefore draw either without knowing which.
"""

from __future__ import annotations

from XRayVOSLib.synth.generate import SynthConfig, SyntheticCine, generate_cine_v1
from XRayVOSLib.synth.v2.generate import SynthV2Config, generate_cine_v2

GENERATORS = ("v1", "v2")


def generate_cine(seed: int, num_frames: int = 30, size: int = 512,
                  config: SynthConfig | SynthV2Config | None = None) -> SyntheticCine:
    """One synthetic cine; the same (seed, num_frames, size, config) gives byte-identical output."""
    if isinstance(config, SynthV2Config):
        return generate_cine_v2(seed, num_frames, size, config)
    return generate_cine_v1(seed, num_frames, size, config)


def config_for(generator: str, preset: str = "default") -> SynthConfig | SynthV2Config:
    """The preset config of a generator by name ('v1' or 'v2')."""
    from XRayVOSLib.errors import InputError

    if generator not in GENERATORS:
        raise InputError(f"unknown synth generator {generator!r}; use {' or '.join(GENERATORS)}")
    return (SynthV2Config if generator == "v2" else SynthConfig).preset(preset)
