"""The avatar folder on disk (layout: :mod:`ram_avatar.pipelines.ram_avatar_pipeline`): its names,
its checked manifest, Hub downloads, and a description read from its files alone.

No torch here: ``ram-avatar info`` describes a folder from ``avatar.json``, the JSON files beside
the networks and the safetensors headers, without building the body template or loading a network.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

MANIFEST = "avatar.json"
FORMAT = "ram-avatar-avatar"
VERSION = 1
FACE_RIG = "face_rig.safetensors"
PARTS = {"avatar": "avatar", "decoder": "pose_decoder", "prior": "pose_prior"}
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.png"]  # what is downloaded and uploaded: never pickles
NETWORK = "RamAvatar"  # the class RamAvatarPipeline.from_pretrained loads avatar/ as


class AvatarFormatError(ValueError):
    """An avatar folder is incomplete or malformed; the message says which file and what to do."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """``avatar.json`` of an avatar folder, checked; errors name the file and what to do."""
    path = folder / MANIFEST
    if not path.is_file():
        hint = (" (it looks like a bare avatar network from `ram-avatar train`: assemble a whole avatar with `ram-avatar create`"
                " or RamAvatarPipeline.from_training)") if (folder / "config.json").is_file() else ""  # fmt: skip
        raise AvatarFormatError(f"{folder} is not a ram-avatar avatar folder: {MANIFEST} is missing{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise AvatarFormatError(f"{path} is not valid JSON ({error}); re-save the avatar") from None
    if manifest.get("format") != FORMAT:
        raise AvatarFormatError(f"{path}: 'format' must be {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("version", 0) > VERSION:
        raise AvatarFormatError(f"{path} is format version {manifest['version']}; this ram-avatar reads up to {VERSION}: upgrade ram-avatar")
    for key in ("template", "image_size", "fps", "framing"):
        if key not in manifest:
            raise AvatarFormatError(f"{path} has no {key!r}; re-save the avatar with RamAvatarPipeline.save_pretrained")
    if not (folder / PARTS["avatar"] / "config.json").is_file():
        raise AvatarFormatError(f"{folder} has no {PARTS['avatar']}/config.json: the avatar network is missing")
    return manifest


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
        raise FileNotFoundError(f"{repo_id} is not in the local Hub cache and the Hub cannot be reached (offline?): {error}") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise FileNotFoundError(f"could not load the avatar {repo_id} from the Hub: {error}") from None


def describe_avatar(folder_or_hub_id: str | os.PathLike, revision: str | None = None, token: str | None = None) -> dict[str, Any]:
    """What ``ram-avatar info`` prints, read from the folder's files (the keys of
    :meth:`RamAvatarPipeline.describe`): the manifest, the network's class, parameter count (from
    the safetensors header's shapes) and configuration, whether it has MDA and a face rig, and
    the training's summary (``avatar/metrics.json``)."""
    folder = avatar_folder(folder_or_hub_id, revision, token)
    manifest = read_manifest(folder)
    network = folder / PARTS["avatar"]
    weights = network / "model.safetensors"
    if not weights.is_file():
        raise AvatarFormatError(f"{folder} has no {PARTS['avatar']}/model.safetensors: the avatar network's weights are missing")
    metrics = _json(network / "metrics.json") if (network / "metrics.json").is_file() else {}
    return {
        **manifest, "name": manifest.get("name") or folder.name, "source": manifest.get("source") or {},
        "network": NETWORK, "parameters": parameter_count(weights), "config": _json(network / "config.json"),
        "mda": all((folder / PARTS[part] / "config.json").is_file() for part in ("decoder", "prior")),
        "face_rig": (folder / FACE_RIG).is_file(),
        "training": {k: metrics.get(k) for k in ("config", "steps", "train_minutes", "held_out") if k in metrics},
    }  # fmt: skip


def parameter_count(path: Path) -> int:
    """Values stored in a safetensors file, from its header alone (no tensor is read). A ram-avatar
    network saves its parameters and no buffers, so this is its parameter count."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise AvatarFormatError(f"{path} is not valid JSON ({error}); re-save the avatar") from None
