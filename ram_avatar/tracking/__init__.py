"""Tracking a monocular clip into a subject dataset: decoding, person detection, masks, crops,
body and face fitting (``ram-avatar track``; :func:`ram_avatar.tracking.pipeline.track`)."""

from ram_avatar.lazy import lazy_exports

_CROP, _DETECT, _VIDEO = "ram_avatar.tracking.crop", "ram_avatar.tracking.detect", "ram_avatar.tracking.video"
_NAMES = {
    _CROP: ("crop_image", "crop_intrinsics", "crop_points", "paste_back", "smooth_boxes", "source_intrinsics"),
    _DETECT: (
        "BODY_LAYOUT",
        "FACE_LAYOUT",
        "HAND_LAYOUT",
        "Detections",
        "PersonDetector",
        "detect_clip",
        "frame_ranges",
        "guided_filter",
    ),
    _VIDEO: (
        "MIN_FRAMES",
        "TrackingError",
        "Video",
        "VideoInfo",
        "VideoStream",
        "probe_video",
        "read_video",
        "rotate_frame",
    ),
    "ram_avatar.tracking.pipeline": ("track",),
}
__all__ = sorted(name for names in _NAMES.values() for name in names)
__getattr__ = lazy_exports(__name__, {name: module for module, names in _NAMES.items() for name in names})
