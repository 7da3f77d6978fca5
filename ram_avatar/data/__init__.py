"""Subject datasets: the one on-disk format for a tracked clip (docs/subject_format.md).

Tracking writes one with :func:`write_subject`; training reads it with :func:`load_subject` or,
frame by frame, with :class:`SubjectDataset`. Every format problem raises
:class:`SubjectFormatError`, naming the file and field at fault.
"""

from ram_avatar.data.format import FORMAT_NAME, FORMAT_VERSION, SubjectFormatError
from ram_avatar.data.subject import (
    CameraTrack,
    ImageSequence,
    SubjectData,
    SubjectDataset,
    TemplateInfo,
    load_subject,
    validate_subject,
    write_subject,
)

__all__ = [
    "CameraTrack",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ImageSequence",
    "SubjectData",
    "SubjectDataset",
    "SubjectFormatError",
    "TemplateInfo",
    "load_subject",
    "validate_subject",
    "write_subject",
]
