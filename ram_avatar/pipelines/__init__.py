"""The product layer: a whole avatar driven by any motion, rendered to frames or mp4.

``RamAvatarPipeline.from_pretrained(folder_or_hub_id)(motion, out="out.mp4")``; the avatar folder
layout is documented in :mod:`ram_avatar.pipelines.format`, the pipeline's jobs in
:mod:`ram_avatar.pipelines.ram_avatar_pipeline`. The command line is in
:mod:`ram_avatar.pipelines.cli` (``create``, ``animate``, ``push``, ``info``).
"""

from ram_avatar.lazy import lazy_exports

_MODULES = {
    "ram_avatar.pipelines.ram_avatar_pipeline": ["AnimationResult", "RamAvatarPipeline"],
    "ram_avatar.pipelines.folder": ["AvatarFormatError"],
    "ram_avatar.pipelines.driving": ["Driving"],
    "ram_avatar.pipelines.framing": ["Framing"],
    "ram_avatar.pipelines.streaming": ["RenderedFrame", "Streamer"],
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__ = lazy_exports(__name__, {name: module for module, names in _MODULES.items() for name in names})
