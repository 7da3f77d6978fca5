"""The product layer: a whole avatar driven by any motion, rendered to frames or mp4.

``RamAvatarPipeline.from_pretrained(folder_or_hub_id)(motion, out="out.mp4")``; the avatar folder
layout is documented in :mod:`ram_avatar.pipelines.ram_avatar_pipeline`. The command line is in
:mod:`ram_avatar.pipelines.cli` (``create``, ``animate``, ``push``, ``info``).
"""

from ram_avatar.lazy import lazy_exports

__all__ = ["AnimationResult", "AvatarFormatError", "Driving", "Framing", "RamAvatarPipeline", "RenderedFrame"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "ram_avatar.pipelines.ram_avatar_pipeline"))
