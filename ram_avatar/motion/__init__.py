"""Driving motion as SMPL-X-layout pose sequences: BVH (any common skeleton), AMASS and SMPL-X
parameter files, videos and tracked clips, resampled to any frame rate.

``load_motion(path, fps=None, max_frames=None)`` -> :class:`Motion`; ``save_motion(motion,
"clip.npz")``; ``find_motion_files(folder)``. Malformed files raise :class:`MotionFormatError` (a
``ValueError``) saying which file and field are wrong and what was expected; files over a limit
(size, frame rate, frames kept: ``ram_avatar.limits``) raise ``LimitError`` (a ``ValueError`` too),
checked before the work they would cost.
"""

from ram_avatar.lazy import lazy_exports

_IO, _SEQUENCE = "ram_avatar.motion.io", "ram_avatar.motion.sequence"
__all__ = [
    "MOTION_EXTENSIONS",
    "Motion",
    "MotionFormatError",
    "VIDEO_EXTENSIONS",
    "find_motion_files",
    "load_motion",
    "resample",
    "save_motion",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "MOTION_EXTENSIONS": _IO,
        "VIDEO_EXTENSIONS": _IO,
        "find_motion_files": _IO,
        "load_motion": _IO,
        "save_motion": _IO,
        "Motion": _SEQUENCE,
        "MotionFormatError": _SEQUENCE,
        "resample": _SEQUENCE,
    },
)
