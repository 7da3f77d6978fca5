"""An avatar folder checked as a whole before anything of it is loaded (it may come from any Hub repo).

    check_avatar_folder(folder, read_manifest(folder))   # raises AvatarFormatError / LimitError

``read_manifest`` has checked ``avatar.json``; here each network (``avatar/``, and
``pose_decoder/`` + ``pose_prior/`` where present) has its ``config.json`` checked (types, ranges),
its ``model.safetensors`` header checked against the file and against the network its config
describes (built on the meta device: no memory), and ``face_rig.safetensors`` and
``surface_offsets.safetensors`` their headers (the offsets' values when loaded); then
the memory the avatar needs — the networks' parameters plus one frame's activations at the
avatar's ``image_size`` (:func:`frame_activation_bytes`) — is checked against the limit
``avatar_memory_gb``. So a damaged file, a config asking for 10^6 channels or an ``image_size``
of 100000 is a one-line error at once, not a traceback nor a 300 GB allocation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ram_avatar.limits import check_limit
from ram_avatar.pipelines.folder import FACE_RIG, SURFACE, AvatarFormatError, read_components, safetensors_header

MAX_VERTICES = 1_000_000  # template vertices surface offsets may have (Anny: 13,718; SMPL-X: 10,475)
FACE_RIG_SHAPE = (478, 3)  # MediaPipe's face mesh: 478 points in the head joint's frame
FLOAT_BYTES = 4  # the networks run in float32
CACHE_BYTES = 64 * 2**20  # an allowance for what rendering caches whatever the frame size


def check_avatar_folder(
    folder: Path, manifest: dict[str, Any], components: dict[str, tuple[str, str]] | None = None
) -> int:
    """Check an avatar folder's networks, face rig and memory need (module docstring) without
    loading any of it; returns the estimated bytes (parameters plus one frame's activations).
    ``components``: the parts and their classes (default: :func:`~ram_avatar.pipelines.folder.read_components`)."""
    from ram_avatar.models.hub import check_config, check_weights
    from ram_avatar.registry import component_class

    needed, avatar_config = 0, None
    for label, (library, name) in (components or read_components(folder)).items():
        cls = component_class(label, library, name)
        network = folder / label
        config = _read_json(network / "config.json", f"{label}/config.json")
        weights = network / "model.safetensors"
        if not weights.is_file():
            raise AvatarFormatError(f"{label}/model.safetensors is missing: download the avatar again or re-save it")
        needed += check_weights(cls, config, weights, label)
        if label == "avatar":
            avatar_config = check_config(cls, config, f"{label}/config.json")
    if (folder / FACE_RIG).is_file():
        rig = safetensors_header(folder / FACE_RIG, FACE_RIG).get("face_landmarks")
        if rig is None or rig[1] != FACE_RIG_SHAPE:
            raise AvatarFormatError(
                f"{FACE_RIG} must hold 'face_landmarks' of shape {list(FACE_RIG_SHAPE)}, "
                f"found {list(rig[1]) if rig else 'none'}; re-save the avatar"
            )
    if (folder / SURFACE).is_file():
        offsets = safetensors_header(folder / SURFACE, SURFACE).get("offsets")
        if offsets is None or offsets[0] != "F32" or len(offsets[1]) != 1 or offsets[1][0] > MAX_VERTICES:
            raise AvatarFormatError(
                f"{SURFACE} must hold 'offsets', one float32 per template vertex (at most {MAX_VERTICES}), "
                f"found {list(offsets[1]) if offsets else 'none'}; re-save the avatar"
            )
    needed += frame_activation_bytes(avatar_config, tuple(manifest["image_size"]))
    check_limit("avatar_memory_gb", needed / 2**30, f"{manifest.get('name') or folder.name}, in GB")
    return needed


def frame_activation_bytes(config: dict[str, Any], image_size: tuple[int, int]) -> int:
    """An upper estimate of the memory one frame of a ``RamAvatar`` (whole ``config``) takes to
    render at ``image_size`` (H, W): the feature maps alive at once, the renderer stem's unfolded
    input (9 values per input value of its 3x3 conv), the criss-cross attention's row and column
    logits, and a fixed allowance for caches. Measured peaks (one frame, one thread, the fast and
    the eager path) were 0.4-0.9 of it: rt-256 at 256^2 and 512^2, hq-512 at 512^2 (and eager at
    1024^2), paper-1024 at 512^2, rt-256 with its attention at full size."""
    from ram_avatar.models.dual_attention import attention_size

    widths = list(config["widths"])
    multiple = 2 ** len(widths)  # the StyleUNet pads a frame to its pyramid's multiple
    height, width = (math.ceil(side / multiple) * multiple for side in image_size)
    pixels = height * width
    texture = config["texture_channels"]
    maps = config["map_channels"] * (int(config["face_map"]) + int(config["hand_map"]))
    drawn = 4 * config["map_hidden"] * (int(config["face_map"]) + int(config["hand_map"]))  # face / hand U-Nets
    # full resolution: the sampled texture (and its zero-filled copy), the attention term and the
    # body sum, the renderer's input twice (concatenated, then channels-last), the output image,
    # and the stem's unfolded input (at a quarter of the pixels)
    floats = (4 * texture + 2 * (texture + maps) + drawn + 16) * pixels + 9 * (texture + maps) * pixels // 4
    for level, channels in enumerate(widths):  # skip, decoder convs, upsampled coarser level, concatenation
        coarser = widths[level + 1] if level + 1 < len(widths) else 0
        floats += (5 * channels + 2 * coarser + 16) * pixels // 4 ** (level + 1)
    if config.get("spatial_attention") or config.get("temporal_attention"):  # renderers without attention lack both
        h, w = attention_size(*image_size, config["attention_downsample"])
        # row and column logits (h w (h + w)) twice (logits, exponentials), plus the maps
        floats += h * w * (2 * (h + w) + 8 * config["attention_hidden"] + 2 * texture)
    return FLOAT_BYTES * floats + CACHE_BYTES


def _read_json(path: Path, label: str) -> Any:
    if not path.is_file():
        raise AvatarFormatError(f"{label} is missing: download the avatar again or re-save it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AvatarFormatError(f"{label} is not valid JSON: download the avatar again or re-save it") from None
