"""Bounds on what ram-avatar accepts, checked *before* work is done (so a 300-byte file cannot ask
for 100 GB). Every limit has a default that fits a 24 GiB machine and an environment variable
``RAM_AVATAR_LIMIT_<NAME>`` for a user who really needs more; the error says which.

    >>> from ram_avatar.limits import limit, check_limit
    >>> check_limit("motion_frames", 1_000, "wave.bvh")   # fine
    >>> limit("fps")                                      # (min, max)
    (0.1, 1000.0)
"""

from __future__ import annotations

import os

# name -> (default, what it bounds). Ranges are (min, max) tuples.
LIMITS: dict[str, tuple[float | tuple[float, float], str]] = {
    "motion_file_mb": (512.0, "size of a motion file (BVH / .npz / .json) in MB"),
    "motion_frames": (200_000, "frames of motion kept after resampling (about 1.8 h at 30 fps)"),
    "bvh_joints": (1000, "joints in a BVH file's skeleton"),
    "fps": ((0.1, 1000.0), "frames per second of a motion or video"),
    "video_pixels": (4096 * 4096, "pixels in one video frame"),
    "video_seconds": (3600.0, "duration of a video to track or drive with, in seconds"),
    "video_file_mb": (4096.0, "size of a video file in MB"),
    "image_size": (2048, "an avatar's render size in pixels (side of the square)"),
    "avatar_memory_gb": (8.0, "memory an avatar's network may need (parameters plus one frame's activations)"),
    "avatar_file_mb": (4096.0, "size of one weights file of an avatar in MB"),
}


class LimitError(ValueError):
    """An input is over a documented limit; the message names the limit and how to raise it."""


def env_name(name: str) -> str:
    return f"RAM_AVATAR_LIMIT_{name.upper()}"


def limit(name: str) -> float | tuple[float, float]:
    """The limit ``name`` (see :data:`LIMITS`), with ``RAM_AVATAR_LIMIT_<NAME>`` applied
    (for a range: ``"MIN,MAX"``)."""
    default, _ = LIMITS[name]
    raw = os.environ.get(env_name(name))
    if raw is None or not raw.strip():
        return default
    try:
        if isinstance(default, tuple):
            low, high = (float(v) for v in raw.split(","))
            return (low, high)
        return type(default)(float(raw))
    except ValueError:
        raise LimitError(
            f"{env_name(name)}={raw!r} is not a number{' pair MIN,MAX' if isinstance(default, tuple) else ''}"
        ) from None


def check_limit(name: str, value: float, what: str) -> None:
    """Raise :class:`LimitError` when ``value`` is outside limit ``name``. ``what`` names the
    input in the message (a file name, never a full server path)."""
    bound = limit(name)
    low, high = bound if isinstance(bound, tuple) else (None, bound)
    if value != value or (low is not None and value < low) or value > high:  # value != value: NaN
        allowed = f"between {low:g} and {high:g}" if low is not None else f"at most {high:g}"
        raise LimitError(
            f"{what}: {LIMITS[name][1]} is {value:g}, but must be {allowed}. "
            f"If the input is right, raise the limit with {env_name(name)}=..."
        )
