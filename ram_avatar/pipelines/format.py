"""The avatar folder format: what ``RamAvatarPipeline.save_pretrained`` writes, ``from_pretrained``
reads and ``push_to_hub`` uploads (only JSON, safetensors, Markdown and a PNG picture, nothing
pickled)::

    avatar.json            the avatar's manifest: template, shape, size, fps, framing (below)
    model_index.json       its parts' classes, in diffusers' convention (below)
    avatar/                the avatar network (RamAvatar, or another registered renderer):
                           config.json, model.safetensors, README.md (the training's model card),
                           metrics.json, preview.png (held-out frames, ground truth | avatar on
                           white; optional)
    face_rig.safetensors   ``face_landmarks`` (478, 3): the subject's median MediaPipe face mesh in
                           its head joint's frame (metres); drawn on the driven head, since mocap
                           has no face landmarks (optional)
    surface_offsets.safetensors
                           ``offsets`` (V,): metres each template vertex sits out along the posed
                           normal, the person's clothes, hair and build beyond the shape space
                           (``ram_avatar.tracking.surface``; optional)
    pose_decoder/          the subject's SubjectPoseDecoder for MDA (optional)
    pose_prior/            the PoseVAE the decoder was trained against (with pose_decoder/)
    README.md              the avatar's model card

``avatar.json``::

    {"format": "ram-avatar-avatar", "version": 1, "name": "dancer-rt256",
     "template": {"name": "anny", "shape_space": "anny-phenotype-6", "shape": [6 floats]},
     "image_size": [256, 256], "fps": 30.0,
     "framing": {"focal": 400.0, "pelvis_uv": [0.5, 0.55], "pelvis_depth": 2.6},
     "source": {"video": "clip.mp4", "frames": 120, "synthetic": false}}

``source.synthetic``: the video showed a rendered, synthetic person (the model cards then say so
rather than ask for the person's consent; absent: false). ``framing``: see
:mod:`ram_avatar.pipelines.framing`.

``model_index.json`` names each part's library and class, as diffusers' pipelines do (an absent
optional part is ``[null, null]``)::

    {"_class_name": "RamAvatarPipeline", "_ram_avatar_version": "0.1.0",
     "avatar": ["ram_avatar", "RamAvatar"], "pose_decoder": ["ram_avatar", "SubjectPoseDecoder"],
     "pose_prior": ["ram_avatar", "PoseVAE"]}

Each class is looked up in :mod:`ram_avatar.registry`, which refuses the classes it does not
hold: a file never makes ram-avatar import a module. Folders saved before ``model_index.json``
existed (without it) hold the classes they were saved with: a RamAvatar and, with MDA, a
SubjectPoseDecoder and a PoseVAE. Before anything is loaded the whole folder is checked
(:mod:`ram_avatar.pipelines.validate`): a damaged or oversized avatar is an
``AvatarFormatError`` / ``LimitError`` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ram_avatar import __version__
from ram_avatar.atomic import staged_folder
from ram_avatar.pipelines.folder import (
    COMPONENTS,
    FACE_RIG,
    MANIFEST,
    PIPELINE_CLASS,
    SURFACE,
    AvatarFormatError,
    avatar_folder,
    read_components,
    read_manifest,
)
from ram_avatar.pipelines.framing import Framing
from ram_avatar.pipelines.validate import check_avatar_folder
from ram_avatar.registry import LIBRARY, ROLES, component_class, component_name

if TYPE_CHECKING:
    from ram_avatar.pipelines.ram_avatar_pipeline import RamAvatarPipeline

# Files kept with the network (``avatar/``) besides its weights: card, training metrics, picture.
AVATAR_EXTRAS = ("README.md", "metrics.json", "preview.png")


def load_avatar_folder(
    folder_or_hub_id: str | os.PathLike, revision: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """Read an avatar folder, or a Hub repo's snapshot (``HF_HUB_OFFLINE``: the local Hub cache
    only), checked before anything is loaded; returns ``RamAvatarPipeline``'s arguments."""
    folder = avatar_folder(folder_or_hub_id, revision, token)
    manifest = read_manifest(folder)
    components = read_components(folder)
    check_avatar_folder(folder, manifest, components)
    parts = {role: component_class(role, *cls).from_pretrained(str(folder / role)) for role, cls in components.items()}
    face_rig = None
    if (folder / FACE_RIG).is_file():
        from safetensors.torch import load_file

        face_rig = load_file(folder / FACE_RIG)["face_landmarks"]
    return {
        "avatar": parts["avatar"],
        "template_name": manifest["template"]["name"],
        "shape": torch.tensor(manifest["template"]["shape"]),
        "offsets": surface_offsets(folder),
        "framing": Framing.from_dict(manifest["framing"]),
        "fps": manifest["fps"],
        "image_size": tuple(manifest["image_size"]),
        "face_rig": face_rig,
        "decoder": parts.get("pose_decoder"),
        "prior": parts.get("pose_prior"),
        "name": manifest.get("name") or folder.name,
        "template_info": manifest["template"],
        "source": manifest.get("source"),
        "avatar_files": _extras(folder / "avatar"),
    }


def surface_offsets(folder: Path) -> torch.Tensor | None:
    """The avatar's ``surface_offsets.safetensors`` (V,) (header already checked), or None.
    Raises AvatarFormatError for a value that is not finite or beyond the subject format's bound."""
    if not (folder / SURFACE).is_file():
        return None
    from safetensors.torch import load_file

    from ram_avatar.data.format import MAX_OFFSET

    offsets = load_file(folder / SURFACE)["offsets"]
    if not (torch.isfinite(offsets).all() and offsets.abs().max() <= MAX_OFFSET):
        raise AvatarFormatError(
            f"{SURFACE} holds offsets that are not finite or beyond +-{MAX_OFFSET} m; re-save the avatar"
        )
    return offsets


def load_network(folder: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, bytes]]:
    """An avatar network folder on its own (``ram-avatar train``'s ``OUT_DIR/avatar``): the network,
    of the class :func:`network_class` finds, and the files kept with it (:data:`AVATAR_EXTRAS`)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder.name} is not a trained avatar network (no config.json); train one with `ram-avatar train`"
        )
    return network_class(folder).from_pretrained(str(folder)), _extras(folder)


def network_class(folder: Path) -> type:
    """The class of the avatar network in ``folder``: what ``model_index.json`` names when
    ``folder`` is a whole avatar's ``avatar/``; else what the training that wrote it recorded
    (``metrics.json``'s ``model``); else ``RamAvatar``. Looked up in :mod:`ram_avatar.registry`."""
    if folder.name == "avatar" and (folder.parent / MANIFEST).is_file():
        return component_class("avatar", *read_components(folder.parent)["avatar"])
    name = "RamAvatar"
    if (folder / "metrics.json").is_file():
        try:
            name = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("model", name)
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise AvatarFormatError(f"{folder.name}/metrics.json is not a JSON object; re-run the training") from None
    return component_class("avatar", LIBRARY, name)


def component_index(pipe: RamAvatarPipeline) -> dict[str, Any]:
    """``model_index.json`` for the avatar ``pipe`` (module docstring); raises
    ``UnknownComponentError`` for a part whose class is not registered (it could not load again)."""
    parts = {"avatar": pipe.avatar, "pose_decoder": pipe.decoder, "pose_prior": pipe.prior}
    index: dict[str, Any] = {"_class_name": PIPELINE_CLASS, "_ram_avatar_version": __version__}
    for role in ROLES:  # an absent optional part is [null, null], as in diffusers
        index[role] = [None, None] if parts[role] is None else list(component_name(role, type(parts[role])))
    return index


def save_avatar_folder(pipe: RamAvatarPipeline, folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write the whole avatar folder of ``pipe`` (module docstring) atomically: built under a
    temporary name beside ``folder`` and renamed into place (an existing folder is replaced).
    The model cards' snippets load the avatar from ``repo_id`` (when it will be pushed there),
    else from ``folder`` as given."""
    from safetensors.torch import save_file

    folder = Path(folder)
    index = component_index(pipe)  # before writing anything: every part must load again
    with staged_folder(folder) as staging:
        net = staging / "avatar"
        net.mkdir()
        where = repo_id or folder.as_posix()  # where the cards' snippets load the avatar from
        for name, data in pipe.avatar_files.items():  # the card first: save_pretrained keeps it
            (net / name).write_bytes(pipe.network_card(where).encode("utf-8") if name == "README.md" else data)
        _cpu_copy(pipe.avatar).save_pretrained(net)
        if pipe.decoder is not None:
            _cpu_copy(pipe.decoder).save_pretrained(staging / "pose_decoder")
            _cpu_copy(pipe.prior).save_pretrained(staging / "pose_prior")
        if pipe.face_rig is not None:
            save_file({"face_landmarks": pipe.face_rig.contiguous()}, staging / FACE_RIG)
        if pipe.offsets is not None:
            save_file({"offsets": pipe.offsets.contiguous()}, staging / SURFACE)
        (staging / MANIFEST).write_text(json.dumps(pipe.manifest(), indent=2) + "\n", encoding="utf-8")
        (staging / COMPONENTS).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(pipe.model_card(where), encoding="utf-8")
    return folder


def _extras(network: Path) -> dict[str, bytes]:
    """The files kept with a network folder (:data:`AVATAR_EXTRAS`) that it has."""
    return {name: (network / name).read_bytes() for name in AVATAR_EXTRAS if (network / name).is_file()}


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself when it is on the CPU, else a CPU copy (save_pretrained writes CPU tensors)."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        return model
    import copy

    return copy.deepcopy(model).cpu()
