"""How data reaches a network's input: the one definition of input units (docs/data.md).

A network takes integer *units* at every step, [T, B, *input_shape]: pixels 0..max for the direct
encoding (min..max where the encoding has a negative min), 0/1 for the spike encoding. A fixed-point network takes the units themselves; a float
network takes units x encoding scale. Static frames (images) become units by being presented at
every step, thresholded first for a spike encoding ("a pixel fires when bright enough"), or mapped
through the encoding's `pixel_transform` (units = weight x pixel // 255 + bias: the bias mantissas of
lava-dl's bias-driven input neurons). With `present_steps`, a frame is presented at the first
present_steps steps only and the input is 0 afterwards, while the network drains.
"""
from __future__ import annotations

import numpy as np

PIXEL_MAX = 255  # frames given to a spike-encoded network are 8-bit images, thresholded


def unit_max(encoding: dict) -> int:
    """The largest unit the network's input takes at one step."""
    return int(encoding["max"])


def unit_min(encoding: dict) -> int:
    """The smallest unit the network's input takes at one step: 0, or the encoding's negative
    `min` (signed inputs, as a sigma-delta network's Delta encoder takes them)."""
    return int(encoding.get("min", 0))


def unit_magnitude(encoding: dict) -> int:
    """The largest magnitude of one input unit."""
    return max(unit_max(encoding), -unit_min(encoding))


def frame_min(encoding: dict) -> int:
    """The smallest value of a static frame: 0 for pixels, else one unit."""
    return 0 if encoding.get("kind") == "spikes" or "pixel_transform" in encoding else unit_min(encoding)


def frame_max(encoding: dict) -> int:
    """The largest value of a static frame: a pixel for a spike encoding, else one unit."""
    return PIXEL_MAX if encoding.get("kind") == "spikes" or "pixel_transform" in encoding else unit_max(encoding)


def frame_units(encoding: dict, steps: int, frames: np.ndarray) -> np.ndarray:
    """Static frames [B, *shape] -> units [steps, B, *shape] (int64; a broadcast view)."""
    frames = np.asarray(frames)
    if encoding.get("kind") == "spikes":
        frames = frames >= encoding["threshold"]
    elif "pixel_transform" in encoding:
        transform = encoding["pixel_transform"]
        frames = transform["weight"] * frames.astype(np.int64) // PIXEL_MAX + transform["bias"]
    frames = frames.astype(np.int64, copy=False)
    units = np.broadcast_to(frames, (steps,) + frames.shape)
    present = encoding.get("present_steps")
    if present is not None and present < steps:
        units = np.concatenate([units[:present], np.zeros((steps - present,) + frames.shape, np.int64)])
    return units


def network_input(fixed: bool, encoding: dict, units: np.ndarray) -> np.ndarray:
    """Units as a network takes them: int64 for fixed point, units x scale (float64) for float."""
    if fixed:
        return np.asarray(units).astype(np.int64, copy=False)
    return np.asarray(units).astype(np.float64) * encoding["scale"]
