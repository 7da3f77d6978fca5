"""The avatar folder on disk (layout: :mod:`ram_avatar.pipelines.format`): its names, its checked
manifests (``avatar.json``, ``model_index.json``), Hub downloads, and a description read from its
files alone.

No torch here: ``ram-avatar info`` describes a folder from ``avatar.json``, the JSON files beside
the networks and the safetensors headers, without building the body template or loading a network.
An avatar folder may come from any Hub repo, so everything read here is checked before it is used:
the manifest's types and ranges, and each safetensors file's header against the file itself.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from ram_avatar import registry
from ram_avatar.limits import check_limit

MANIFEST = "avatar.json"
FORMAT = "ram-avatar-avatar"
VERSION = 1
FACE_RIG = "face_rig.safetensors"
SURFACE = "surface_offsets.safetensors"
PARTS = {"avatar": "avatar", "decoder": "pose_decoder", "prior": "pose_prior"}
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.png"]  # what is downloaded and uploaded: never pickles
COMPONENTS = "model_index.json"  # each part's library and class, in diffusers' convention
PIPELINE_CLASS = "RamAvatarPipeline"  # its "_class_name"
# What a folder without model_index.json (saved before it existed) holds: these classes.
LEGACY_CLASSES = {"avatar": "RamAvatar", "pose_decoder": "SubjectPoseDecoder", "pose_prior": "PoseVAE"}
# Bytes per value of the safetensors dtypes a ram-avatar file may hold.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
MAX_HEADER_BYTES = 16 * 2**20  # a network's header is ~10 KB (the safetensors library allows 100 MB)


class AvatarFormatError(ValueError):
    """An avatar folder is incomplete or malformed; the message says which file and what to do."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """``avatar.json`` of an avatar folder, checked; errors name the file and what to do."""
    path = folder / MANIFEST
    if not path.is_file():
        hint = (
            (
                " (it looks like a bare avatar network from `ram-avatar train`: assemble a whole avatar with "
                "`ram-avatar create`"
                " or RamAvatarPipeline.from_training)"
            )
            if (folder / "config.json").is_file()
            else ""
        )
        raise AvatarFormatError(f"{folder} is not a ram-avatar avatar folder: {MANIFEST} is missing{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise AvatarFormatError(f"{path} is not valid JSON ({error}); re-save the avatar") from None
    if not isinstance(manifest, dict):
        raise AvatarFormatError(f"{path} must hold a JSON object; re-save the avatar with save_pretrained")
    if manifest.get("format") != FORMAT:
        raise AvatarFormatError(f"{path}: 'format' must be {FORMAT!r}, got {manifest.get('format')!r}")
    version = manifest.get("version", 0)
    if not _is_int(version):
        raise AvatarFormatError(f"{path}: 'version' must be an integer, got {version!r}; re-save the avatar")
    if version > VERSION:
        raise AvatarFormatError(
            f"{path} is format version {manifest['version']}; this ram-avatar reads up to {VERSION}: upgrade ram-avatar"
        )
    for key in ("template", "image_size", "fps", "framing"):
        if key not in manifest:
            raise AvatarFormatError(f"{path} has no {key!r}; re-save the avatar with RamAvatarPipeline.save_pretrained")
    check_manifest(manifest, f"{folder.name}/{MANIFEST}")
    if not (folder / PARTS["avatar"] / "config.json").is_file():
        raise AvatarFormatError(f"{folder} has no {PARTS['avatar']}/config.json: the avatar network is missing")
    return manifest


def check_manifest(manifest: dict[str, Any], label: str) -> None:
    """Check the types and ranges of an ``avatar.json``'s values (``label`` names it in errors);
    ``image_size`` and ``fps`` against the limits ``image_size`` and ``fps``."""

    def bad(key: str, expected: str) -> AvatarFormatError:
        value = json.dumps(_dig(manifest, key))
        shown = value if len(value) <= 60 else value[:57] + "..."
        return AvatarFormatError(f"{label}: {key!r} must be {expected}, got {shown}; re-download or re-save the avatar")

    size = manifest["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 1 for v in size)):
        raise bad("image_size", "[height, width], two positive integers")
    check_limit("image_size", max(size), f"{label} 'image_size'")
    if not (_is_number(manifest["fps"]) and manifest["fps"] > 0):
        raise bad("fps", "a positive number")
    check_limit("fps", manifest["fps"], f"{label} 'fps'")
    template = manifest["template"]
    if not (isinstance(template, dict) and isinstance(template.get("name"), str)):
        raise bad("template", "an object with a 'name' (the body template)")
    shape = template.get("shape")
    if not (isinstance(shape, list) and len(shape) <= 1024 and all(_is_number(v) for v in shape)):
        raise bad("template.shape", "a list of at most 1024 finite numbers")
    framing = manifest["framing"]
    if not isinstance(framing, dict):
        raise bad("framing", "an object with 'focal', 'pelvis_uv' and 'pelvis_depth'")
    for key in ("focal", "pelvis_depth"):
        if not (_is_number(framing.get(key)) and framing[key] > 0):
            raise bad(f"framing.{key}", "a positive number")
    uv = framing.get("pelvis_uv")
    if not (isinstance(uv, list) and len(uv) == 2 and all(_is_number(v) for v in uv)):
        raise bad("framing.pelvis_uv", "two finite numbers")
    if not isinstance(manifest.get("name", ""), str):
        raise bad("name", "a string")
    if not isinstance(manifest.get("source") or {}, dict):
        raise bad("source", "an object")


def read_components(folder: Path) -> dict[str, tuple[str, str]]:
    """The parts of an avatar folder and their classes, ``{role: (library, class name)}`` for the
    parts it has (``avatar``, and ``pose_decoder`` + ``pose_prior`` when it has MDA): from
    ``model_index.json``, each class checked against :mod:`ram_avatar.registry`; a folder saved
    before ``model_index.json`` existed has the classes it was saved with (``LEGACY_CLASSES``)."""
    path = folder / COMPONENTS
    if not path.is_file():
        parts = {role: (registry.LIBRARY, name) for role, name in LEGACY_CLASSES.items() if (folder / role).is_dir()}
        if "pose_decoder" in parts and not (folder / "pose_prior" / "config.json").is_file():
            raise AvatarFormatError(
                f"{folder.name} has pose_decoder/ but no pose_prior/: MDA needs both; "
                "add the prior or remove the decoder"
            )
        if "pose_decoder" not in parts:
            parts.pop("pose_prior", None)  # a prior alone is no MDA: not loaded, as before
        return parts
    index = _json(path)
    if not isinstance(index, dict) or index.get("_class_name") != PIPELINE_CLASS:
        raise AvatarFormatError(
            f'{COMPONENTS} must be a JSON object with "_class_name": {json.dumps(PIPELINE_CLASS)}; '
            "re-download or re-save the avatar"
        )
    parts = {}
    for role, entry in index.items():
        if role.startswith("_"):  # metadata (diffusers' convention), e.g. the version that saved it
            continue
        if role not in registry.ROLES:
            raise AvatarFormatError(
                f"{COMPONENTS} names a part {role!r} this ram-avatar does not know "
                f"(it knows {', '.join(registry.ROLES)}): upgrade ram-avatar"
            )
        if entry == [None, None]:  # an optional part the avatar does not have
            continue
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
            raise AvatarFormatError(
                f"{COMPONENTS}: {role!r} must be [library, class] or [null, null], "
                f"got {json.dumps(entry)[:60]}; re-download or re-save the avatar"
            )
        if not registry.is_registered(role, *entry):
            raise AvatarFormatError(
                f"{COMPONENTS}: {role!r} is {entry[0]}.{entry[1]}, not a class ram-avatar loads "
                f"as {role} ({', '.join(registry.registered(role))}); re-save the avatar, or "
                "register the class with ram_avatar.registry.register"
            )
        if not (folder / role / "config.json").is_file():
            raise AvatarFormatError(
                f"{COMPONENTS} names {role}/ but {role}/config.json is missing: download the avatar again or re-save it"
            )
        parts[role] = (entry[0], entry[1])
    if "avatar" not in parts:
        raise AvatarFormatError(f"{COMPONENTS} names no 'avatar' network; re-download or re-save the avatar")
    if ("pose_decoder" in parts) != ("pose_prior" in parts):
        raise AvatarFormatError(
            f"{COMPONENTS} names only one of pose_decoder and pose_prior: MDA needs both; re-save the avatar"
        )
    return parts


def safetensors_header(path: Path, label: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` of a safetensors file, read from its header alone after
    checking the header against the file (dtypes, shapes, data offsets tiling the data exactly),
    so that loading it cannot fail half-way nor read past its end. The file's size is checked
    against the limit ``avatar_file_mb`` first. ``label`` names the file in errors."""
    size = path.stat().st_size
    check_limit("avatar_file_mb", size / 2**20, label)

    def damaged(why: str) -> AvatarFormatError:
        return AvatarFormatError(
            f"{label} is damaged ({why}); download the avatar again, or re-save it with save_pretrained"
        )

    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise damaged(f"{size} bytes, too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise damaged(f"its header claims {length} bytes but the file holds {size - 8} after the length")
        raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise damaged("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    tensors, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and entry.get("dtype") in DTYPE_BYTES):
            raise damaged(f"tensor {name!r} has no dtype ram-avatar reads")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(_is_int(v) and v >= 0 for v in shape)):
            raise damaged(f"tensor {name!r} has a malformed shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(v) for v in offsets)):
            raise damaged(f"tensor {name!r} has malformed data offsets")
        begin, end = offsets
        if end - begin != math.prod(shape) * DTYPE_BYTES[entry["dtype"]] or begin < 0:
            raise damaged(f"tensor {name!r}'s data offsets do not match its shape")
        tensors[name] = (entry["dtype"], tuple(shape))
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise damaged("its tensors' data overlap or leave gaps")
        position = end
    data = size - 8 - length
    if position > data:
        raise damaged(f"its tensors need {position} bytes of data but the file holds {data}: it is truncated")
    if position < data:
        raise damaged("it has data after its last tensor")
    return tensors


def avatar_folder(folder_or_hub_id: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """The avatar folder itself, or the Hub repo's snapshot in the Hub cache (JSON, safetensors,
    Markdown and PNG only; respects ``HF_HUB_OFFLINE``: offline, only what the cache holds)."""
    folder = Path(folder_or_hub_id)
    return folder if folder.is_dir() else download_avatar(str(folder_or_hub_id), revision, token)


def download_avatar(repo_id: str, revision: str | None, token: str | None) -> Path:
    """Snapshot of a Hub avatar repo (JSON, safetensors, Markdown, PNG only) in the Hub cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise FileNotFoundError(f"{repo_id} is neither an avatar folder here nor a Hub id (owner/name)")
    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=HUB_PATTERNS))
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"{repo_id} is not in the local Hub cache and the Hub cannot be reached (offline?): {error}"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise FileNotFoundError(f"could not load the avatar {repo_id} from the Hub: {error}") from None


def describe_avatar(
    folder_or_hub_id: str | os.PathLike, revision: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """What ``ram-avatar info`` prints, read from the folder's files (the keys of
    :meth:`RamAvatarPipeline.describe`): the manifest, the network's class, parameter count (from
    the safetensors header's shapes) and configuration, whether it has MDA and a face rig, and
    the training's summary (``avatar/metrics.json``)."""
    folder = avatar_folder(folder_or_hub_id, revision, token)
    manifest = read_manifest(folder)
    components = read_components(folder)
    network = folder / PARTS["avatar"]
    weights = network / "model.safetensors"
    if not weights.is_file():
        raise AvatarFormatError(
            f"{folder} has no {PARTS['avatar']}/model.safetensors: the avatar network's weights are missing"
        )
    metrics = _json(network / "metrics.json") if (network / "metrics.json").is_file() else {}
    return {
        **manifest,
        "name": manifest.get("name") or folder.name,
        "source": manifest.get("source") or {},
        "network": components["avatar"][1],
        "parameters": parameter_count(weights),
        "config": _json(network / "config.json"),
        "mda": "pose_decoder" in components,
        "face_rig": (folder / FACE_RIG).is_file(),
        "surface_offsets": (folder / SURFACE).is_file(),
        "training": {k: metrics.get(k) for k in ("config", "steps", "train_minutes", "held_out") if k in metrics},
    }


def parameter_count(path: Path) -> int:
    """Values stored in a safetensors file, from its header alone (no tensor is read). A ram-avatar
    network saves its parameters and no buffers, so this is its parameter count."""
    return sum(math.prod(shape) for _, shape in safetensors_header(path, f"{path.parent.name}/{path.name}").values())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool: JSON's true is no size)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dig(data: dict[str, Any], key: str) -> Any:
    """``data["a"]["b"]`` for ``key`` "a.b" (None where a level is missing or not an object)."""
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        label = f"{path.parent.name}/{path.name}"
        raise AvatarFormatError(f"{label} is not valid JSON ({error}); re-save the avatar") from None
