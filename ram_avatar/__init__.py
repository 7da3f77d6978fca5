"""ram-avatar: real-time photo-realistic full-body avatars from monocular videos (RAM-Avatar, CVPR 2024)."""

__version__ = "0.1.0"
