"""Driving motion as SMPL-X-layout pose sequences: BVH (any common skeleton), AMASS and SMPL-X
parameter files, resampled to any frame rate.

``load_motion(path, fps=None)`` -> :class:`Motion`; ``save_motion(motion, "clip.npz")``;
``find_motion_files(folder)``. Malformed files raise :class:`MotionFormatError` (a
``ValueError``) saying which file and field are wrong and what was expected.
"""

from ram_avatar.motion.io import (
    MOTION_EXTENSIONS, VIDEO_EXTENSIONS, find_motion_files, load_motion, save_motion,
)  # fmt: skip
from ram_avatar.motion.sequence import Motion, MotionFormatError, resample

__all__ = [
    "MOTION_EXTENSIONS", "Motion", "MotionFormatError", "VIDEO_EXTENSIONS", "find_motion_files",
    "load_motion", "resample", "save_motion",
]  # fmt: skip
