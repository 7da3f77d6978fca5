"""RamAvatarPipeline: a whole avatar (folder or Hub repo) driven by any motion, rendered to video.

    pipe = RamAvatarPipeline.from_pretrained("examples/avatars/dancer-rt256")   # or a Hub id
    result = pipe("examples/motions/wave_hello.bvh", out="wave.mp4", mda_strength=0.5)
    for frame in pipe.stream("dance.mp4"): show(frame.image)                 # as they render

Motion (a file, a clip, a ``Motion``) -> [tracked, when it is a clip] -> Motion Distribution Align
(when the avatar has a pose decoder; strength 0..1) -> template + rasterization -> RamAvatar ->
RGB frames, in chunks of a few frames so that memory stays bounded however long the motion is.

Avatar folder layout (``save_pretrained`` writes it, ``from_pretrained`` reads it, ``push_to_hub``
uploads it; only JSON, safetensors, Markdown and a PNG picture, nothing pickled):

    avatar.json            the manifest (below)
    avatar/                the RamAvatar network: config.json, model.safetensors, README.md
                           (the training's model card), metrics.json, preview.png (held-out
                           frames, ground truth | avatar on white; optional)
    face_rig.safetensors   ``face_landmarks`` (478, 3): the subject's median MediaPipe face mesh in
                           its head joint's frame (metres); drawn on the driven head, since mocap
                           has no face landmarks (optional)
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
rather than ask for the person's consent; absent: false).

``framing`` reproduces how the training crops saw the subject: a level front camera with focal
length ``focal`` (pixels at ``image_size``) that follows the body on the ground plane, keeping the
pelvis ``pelvis_depth`` metres away and at ``pelvis_uv`` (fractions of the width and height)
when the body is at the clip's median height (jumps and crouches still move it up and down).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ram_avatar.atomic import staged_folder
from ram_avatar.body.layout import JOINT_NAMES, PARENTS, SmplxPose
from ram_avatar.device import split_threads
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.pipelines.folder import (  # the folder format (torch-free: `ram-avatar info`)
    FACE_RIG, FORMAT, HUB_PATTERNS, MANIFEST, PARTS, VERSION, AvatarFormatError, avatar_folder, read_manifest,
)  # fmt: skip
from ram_avatar.pipelines.validate import check_avatar_folder

# Files kept with the network (``avatar/``) besides its weights: card, training metrics, picture.
AVATAR_EXTRAS = ("README.md", "metrics.json", "preview.png")
PREVIEW_CAPTION = "Held-out frames, never trained on: ground truth | avatar, on white"
from ram_avatar.render import Camera

CAMERA_R = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))  # world (+Y up) -> OpenCV camera, facing -Z
HEAD = JOINT_NAMES.index("head")
ProgressCallback = Callable[[str, int, int], None]
"""``callback(stage, done, total)`` of :meth:`RamAvatarPipeline.stream` and ``__call__``, in order:
``"motion"`` (0, 1) then (1, 1) around loading the motion (a clip is tracked then: the long part);
``"mda"`` (frames aligned, T) after each chunk's Motion Distribution Align (avatars with MDA only);
``"render"`` (frames rendered, T) as each frame comes out. MDA runs a chunk or two ahead of the
frames that come out."""


# ----------------------------------------------------------------------------- geometry


def chain_to(joint: int) -> list[int]:
    """Joint indices from the root down to ``joint``."""
    chain = []
    while joint >= 0:
        chain.append(joint)
        joint = PARENTS[joint]
    return chain[::-1]


def head_transform(pose: SmplxPose, rest_joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotation (B, 3, 3) and position (B, 3) of the head joint, by forward kinematics.

    Args:
        pose: batch B; rotations are local, in world axes at the rest pose (SMPL-X convention).
        rest_joints: (55, 3) the template's joints at zero pose for the subject's shape.
    """
    import roma

    full = pose.full()
    rotation = torch.eye(3, dtype=full.dtype, device=full.device).expand(pose.batch_size, 3, 3)
    position = rest_joints[0].to(full) + pose.transl
    chain = chain_to(HEAD)
    for parent, joint in itertools.pairwise(chain):
        rotation = rotation @ roma.rotvec_to_rotmat(full[:, parent])
        position = position + (rotation @ (rest_joints[joint] - rest_joints[parent]).to(full)[:, None])[..., 0]
    return rotation @ roma.rotvec_to_rotmat(full[:, HEAD]), position


@dataclass
class Framing:
    """A level front camera that follows the body (see the module docstring)."""

    focal: float
    pelvis_uv: tuple[float, float]
    pelvis_depth: float

    def cameras(self, pelvis: torch.Tensor, image_size: tuple[int, int]) -> Camera:
        """B cameras for pelvis world positions (B, 3) (their y: where the body is vertically)."""
        H, W = image_size
        B = pelvis.shape[0]
        R = torch.tensor(CAMERA_R, dtype=pelvis.dtype, device=pelvis.device).expand(B, 3, 3)
        K = torch.tensor([[self.focal, 0, W / 2], [0, self.focal, H / 2], [0, 0, 1]], dtype=pelvis.dtype, device=pelvis.device)
        z = self.pelvis_depth
        target = torch.tensor(
            [(self.pelvis_uv[0] - 0.5) * W * z / self.focal, (self.pelvis_uv[1] - 0.5) * H * z / self.focal, z],
            dtype=pelvis.dtype, device=pelvis.device,
        )  # fmt: skip
        t = target - (R @ pelvis[..., None])[..., 0]
        return Camera(K.expand(B, 3, 3), R, t, image_size)

    def to_dict(self) -> dict[str, Any]:
        return {"focal": self.focal, "pelvis_uv": list(self.pelvis_uv), "pelvis_depth": self.pelvis_depth}


# ----------------------------------------------------------------------------- driving input


@dataclass
class Driving:
    """A driving motion at the frame rate it is rendered at (T frames)."""

    pose: SmplxPose
    fps: float
    name: str
    expression: torch.Tensor | None = None  # (T, E) in the avatar's template space
    face_local: torch.Tensor | None = None  # (T, 478, 3) face mesh in the head frame; NaN rows: none
    audio_source: Path | None = None  # the clip whose sound goes with it


def subject_face_local(subject, template, rest_joints: torch.Tensor) -> torch.Tensor | None:
    """(N, 478, 3) a tracked subject's face mesh in its head joint's frame (metres); rows of frames
    without a detected face are NaN. None when the subject has no 3D face mesh."""
    mesh = subject.keypoints.get("face_mesh")
    if mesh is None:
        return None
    camera = subject.camera
    R, t = torch.as_tensor(np.asarray(camera.R, np.float32)), torch.as_tensor(np.asarray(camera.t, np.float32))
    world = (torch.as_tensor(np.asarray(mesh, np.float32)) - t[:, None]) @ R  # R^T (x - t), as rows
    rotation, position = head_transform(subject.pose.to("cpu"), rest_joints.cpu())
    local = (world - position[:, None]) @ rotation
    found = torch.as_tensor(np.asarray(subject.keypoints["face"])[..., 2] > 0).any(-1)
    return torch.where(found[:, None, None], local, torch.full_like(local, float("nan")))


def _nearest(values: torch.Tensor | None, fps: float, new_fps: float, count: int) -> torch.Tensor | None:
    """Per-frame values (N, ...) resampled to ``count`` frames at ``new_fps`` (nearest frame)."""
    if values is None:
        return None
    index = (torch.arange(count, dtype=torch.float64) * fps / new_fps).round().long().clamp(max=len(values) - 1)
    return values[index]


# ----------------------------------------------------------------------------- results


@dataclass
class RenderedFrame:
    """One rendered frame of :meth:`RamAvatarPipeline.stream`."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB, the avatar on the background
    template: np.ndarray | None  # (H, W, 3) uint8, the posed template over the avatar (overlay=True)
    ood_before: float | None  # MDA out-of-distribution score of the driving pose (~1 = like the subject)
    ood_after: float | None  # the same after alignment


@dataclass
class AnimationResult:
    """What :meth:`RamAvatarPipeline.__call__` rendered."""

    fps: float
    num_frames: int
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8 when no ``out`` path was given
    template_frames: np.ndarray | None = None  # (T, H, W, 3) uint8 with overlay=True and no path
    video: Path | None = None
    template_video: Path | None = None
    ood_before: np.ndarray | None = None  # (T,) when the avatar has MDA
    ood_after: np.ndarray | None = None
    change_deg: np.ndarray | None = None  # (T,) mean per-joint rotation change by MDA, degrees
    seconds: float = 0.0  # wall time of the whole call (motion loading and tracking included)
    render_fps: float = 0.0  # frames per second of the rendering loop alone
    extras: dict[str, Any] = field(default_factory=dict)

    def plot_ood(self, path: str | os.PathLike, title: str = "") -> Path | None:
        """PNG of the OOD scores before / after MDA (None when the avatar has no MDA)."""
        if self.ood_before is None:
            return None
        from ram_avatar.mda.align import AlignResult
        from ram_avatar.mda.report import plot_ood

        result = AlignResult(None, *(torch.as_tensor(a) for a in (self.ood_before, self.ood_after, self.change_deg)), None)
        return plot_ood(result, self.fps, path, title)


# ----------------------------------------------------------------------------- the pipeline


class RamAvatarPipeline:
    """A whole avatar: the network, its body, its framing, and optionally MDA.

    Build one with :meth:`from_pretrained` (a folder or Hub id) or :meth:`from_training` (a
    subject dataset plus trained parts). Args as the attributes of the same names.
    """

    def __init__(
        self,
        avatar: torch.nn.Module,
        template_name: str,
        shape: torch.Tensor,
        framing: Framing,
        fps: float,
        image_size: tuple[int, int],
        *,
        face_rig: torch.Tensor | None = None,
        decoder: torch.nn.Module | None = None,
        prior: torch.nn.Module | None = None,
        name: str = "avatar",
        template_info: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        avatar_files: dict[str, bytes] | None = None,
        device: str | torch.device | None = None,
        body_model_path: str | None = None,
    ):
        from ram_avatar.device import default_device

        if (decoder is None) != (prior is None):
            raise ValueError("MDA needs both the subject's pose decoder and the pose prior it was trained against")
        if decoder is not None:
            from ram_avatar.mda.align import check_pair

            check_pair(prior, decoder)
        self.device = torch.device(device or default_device())
        self.avatar = avatar.to(self.device).eval()
        self.template_name, self.body_model_path = template_name, body_model_path
        self.shape = torch.as_tensor(shape, dtype=torch.float32).flatten()
        self.framing, self.fps, self.image_size = framing, float(fps), (int(image_size[0]), int(image_size[1]))
        self.face_rig = None if face_rig is None else torch.as_tensor(face_rig, dtype=torch.float32)
        self.decoder = None if decoder is None else decoder.to(self.device).eval()
        self.prior = None if prior is None else prior.to(self.device).eval()
        self.name = name
        self.template_info = dict(template_info or {"name": template_name})
        self.source = dict(source or {})
        self.avatar_files = dict(avatar_files or {})  # README.md / metrics.json kept with the network
        self._template = None
        self.fast = True  # render with the fast inference path (see ``renderer``)
        self._fast: tuple[torch.nn.Module, torch.nn.Module] | None = None

    # -- parts ---------------------------------------------------------------------------------

    @property
    def template(self):
        """The body template (loaded on first use; ``load_template`` caches it per process)."""
        if self._template is None:
            from ram_avatar.body import load_template

            self._template = load_template(self.template_name, device=self.device, model_path=self.body_model_path)
            if self._template.shape_dim != self.shape.numel():
                raise AvatarFormatError(
                    f"the avatar's body shape has {self.shape.numel()} values but the {self.template_name} template "
                    f"takes {self._template.shape_dim}: the avatar was made with another template version"
                )
        return self._template

    @property
    def has_mda(self) -> bool:
        return self.decoder is not None

    def _rest_joints(self) -> torch.Tensor:
        with torch.no_grad():
            return self.template(SmplxPose.zeros(1, device=self.device), self.shape[None].to(self.device)).joints[0]

    # -- loading and saving ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        folder_or_hub_id: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        body_model_path: str | None = None,
        revision: str | None = None,
        token: str | None = None,
    ) -> RamAvatarPipeline:
        """Load an avatar folder (module docstring), or download one from the Hub (respects
        ``HF_HUB_OFFLINE``: offline, only what is in the local Hub cache is used). The folder is
        checked before anything is loaded (:mod:`ram_avatar.pipelines.validate`): a damaged or
        oversized avatar is an ``AvatarFormatError`` / ``LimitError`` naming the file."""
        folder = avatar_folder(folder_or_hub_id, revision, token)
        manifest = read_manifest(folder)
        check_avatar_folder(folder, manifest)
        from ram_avatar.models import RamAvatar

        avatar = RamAvatar.from_pretrained(str(folder / PARTS["avatar"]))
        decoder = prior = None
        if (folder / PARTS["decoder"]).is_dir():
            from ram_avatar.mda.train import load_decoder, load_prior

            if not (folder / PARTS["prior"] / "config.json").is_file():
                raise AvatarFormatError(f"{folder} has {PARTS['decoder']}/ but no {PARTS['prior']}/: MDA needs both; add the prior or remove the decoder")
            decoder, prior = load_decoder(folder / PARTS["decoder"]), load_prior(folder / PARTS["prior"])
        face_rig = None
        if (folder / FACE_RIG).is_file():
            from safetensors.torch import load_file

            face_rig = load_file(folder / FACE_RIG)["face_landmarks"]
        extras = {n: (folder / PARTS["avatar"] / n).read_bytes() for n in AVATAR_EXTRAS if (folder / PARTS["avatar"] / n).is_file()}
        framing = manifest["framing"]
        return cls(
            avatar, manifest["template"]["name"], torch.tensor(manifest["template"]["shape"]),
            Framing(float(framing["focal"]), tuple(framing["pelvis_uv"]), float(framing["pelvis_depth"])),
            manifest["fps"], tuple(manifest["image_size"]), face_rig=face_rig, decoder=decoder, prior=prior,
            name=manifest.get("name") or folder.name, template_info=manifest["template"], source=manifest.get("source"),
            avatar_files=extras, device=device, body_model_path=body_model_path,
        )  # fmt: skip

    @classmethod
    def from_training(
        cls,
        subject_dir: str | os.PathLike,
        avatar: torch.nn.Module | str | os.PathLike,
        *,
        decoder: torch.nn.Module | str | os.PathLike | None = None,
        prior: torch.nn.Module | str | os.PathLike | None = None,
        name: str | None = None,
        synthetic: bool = False,
        device: str | torch.device | None = None,
        body_model_path: str | None = None,
    ) -> RamAvatarPipeline:
        """Assemble a whole avatar from its subject dataset and trained parts (model, optional
        MDA decoder + prior): the body shape, framing, fps and face rig come from the subject.
        ``synthetic``: the video shows a rendered, synthetic person, not a real one (recorded in
        ``source``; the model cards say so instead of asking for the person's consent)."""
        from ram_avatar.body import load_template
        from ram_avatar.data import load_subject

        subject = load_subject(subject_dir)
        extras = {}
        if not isinstance(avatar, torch.nn.Module):
            from ram_avatar.models import RamAvatar

            folder = Path(avatar)
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder} is not a trained avatar network (no config.json); train one with `ram-avatar train`")
            extras = {n: (folder / n).read_bytes() for n in AVATAR_EXTRAS if (folder / n).is_file()}
            avatar = RamAvatar.from_pretrained(str(folder))
        if decoder is not None and not isinstance(decoder, torch.nn.Module):
            from ram_avatar.mda.train import load_decoder

            decoder = load_decoder(decoder)
        if prior is not None and not isinstance(prior, torch.nn.Module):
            from ram_avatar.mda.train import load_prior

            prior = load_prior(prior)
        template = load_template(subject.template.name, model_path=body_model_path)
        shape = torch.as_tensor(np.asarray(subject.shape, np.float32))
        framing, face_rig = subject_framing(subject, template, shape)
        info = {"name": subject.template.name, "shape_space": subject.template.shape_space,
                "expression_space": subject.template.expression_space}  # fmt: skip
        return cls(
            avatar, subject.template.name, shape, framing, subject.fps, subject.image_size, face_rig=face_rig,
            decoder=decoder, prior=prior, name=name or Path(subject_dir).name, template_info=info,
            source={"video": subject.source_video, "frames": subject.num_frames, "synthetic": synthetic}, avatar_files=extras,
            device=device, body_model_path=body_model_path,
        )  # fmt: skip

    def manifest(self) -> dict[str, Any]:
        """The ``avatar.json`` content (module docstring)."""
        return {
            "format": FORMAT, "version": VERSION, "name": self.name,
            "template": {**self.template_info, "name": self.template_name, "shape": [float(v) for v in self.shape]},
            "image_size": list(self.image_size), "fps": self.fps, "framing": self.framing.to_dict(),
            "source": self.source,
        }  # fmt: skip

    def save_pretrained(self, folder: str | os.PathLike, repo_id: str | None = None) -> Path:
        """Write the whole avatar folder (module docstring) atomically: built under a temporary
        name beside ``folder`` and renamed into place (an existing folder is replaced). The model
        cards' snippets load the avatar from ``repo_id`` (when it will be pushed there), else from
        ``folder`` as given."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with staged_folder(folder) as staging:
            net = staging / PARTS["avatar"]
            net.mkdir()
            where = repo_id or folder.as_posix()  # where the cards' snippets load the avatar from
            for name, data in self.avatar_files.items():  # the card first: save_pretrained keeps it
                (net / name).write_bytes(self.network_card(where).encode("utf-8") if name == "README.md" else data)
            _cpu_copy(self.avatar).save_pretrained(net)
            if self.decoder is not None:
                _cpu_copy(self.decoder).save_pretrained(staging / PARTS["decoder"])
                _cpu_copy(self.prior).save_pretrained(staging / PARTS["prior"])
            if self.face_rig is not None:
                save_file({"face_landmarks": self.face_rig.contiguous()}, staging / FACE_RIG)
            (staging / MANIFEST).write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
            (staging / "README.md").write_text(self.model_card(where), encoding="utf-8")
        return folder

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None, commit_message: str = "Upload ram-avatar avatar"):
        """Upload the whole avatar folder to the Hub model repo ``repo_id`` (JSON, safetensors,
        Markdown and PNG only); returns the commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "avatar", repo_id=repo.repo_id)
            return api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), repo_type="model",
                                     allow_patterns=HUB_PATTERNS, commit_message=commit_message)  # fmt: skip

    def model_card(self, where: str) -> str:
        """The folder's README.md, for the folder or Hub repo ``where`` (its snippets load from
        there): the avatar's name as title, what the folder holds, consent (the synthetic-subject
        variant when ``source["synthetic"]``), how to drive it, then the network card's facts
        (training data, training, held-out metrics, intended use)."""
        from ram_avatar.training.card import CONSENT, CONSENT_HEADING, USE_HEADING, rebuild_card

        parts = ["the network (`avatar/`)", "its body and framing (`avatar.json`)"]
        if self.has_mda:
            parts.append("Motion Distribution Align (`pose_decoder/` + `pose_prior/`)")
        if self.face_rig is not None:
            parts.append("a face rig (`face_rig.safetensors`)")
        intro = (
            "A whole **ram-avatar** avatar (RAM-Avatar, CVPR 2024), driven in real time by any body, hand and face motion: "
            f"a BVH, AMASS or SMPL-X file, or a video of someone moving. It holds {', '.join(parts[:-1])} and {parts[-1]}: "
            "only JSON, safetensors, Markdown and a PNG picture."
        )  # fmt: skip
        usage = (
            f"```bash\nram-avatar animate {shlex.quote(where)} MOTION out.mp4   # MOTION: a BVH, AMASS / SMPL-X .npz / .json file, or a video\n```\n\n"
            "```python\nfrom ram_avatar.demo import wave_motion\nfrom ram_avatar.motion import Motion\n"
            "from ram_avatar.pipelines import RamAvatarPipeline\n\n"
            f"pipe = RamAvatarPipeline.from_pretrained({json.dumps(where)})\n"
            'motion = Motion(wave_motion(30), fps=30.0, name="wave", source="ram_avatar.demo")   # or a motion file or video, as above\n'
            'result = pipe(motion, out="wave.mp4")   # pipe.stream(motion) yields the frames as they render\n```'
        )  # fmt: skip
        if "preview.png" in self.avatar_files:
            intro += f"\n\n![{PREVIEW_CAPTION}](avatar/preview.png)\n\n*{PREVIEW_CAPTION}.*"
        card = self.avatar_files.get("README.md", b"").decode("utf-8")
        return rebuild_card(card, self.name, intro, {CONSENT_HEADING: CONSENT[self.synthetic], USE_HEADING: usage})

    def network_card(self, where: str) -> str:
        """The network's own card (``avatar/README.md``, when it came with one) inside the folder or
        Hub repo ``where``: its training facts kept; its title, consent and usage those of this
        avatar, through which the network gets its body and camera."""
        from ram_avatar.training.card import CONSENT, CONSENT_HEADING, INTRO, USE_HEADING, rebuild_card

        usage = (
            f"This network renders the avatar `{where}`, which gives it its body shape and camera (the avatar's README.md "
            "shows how to drive it). Load it with the avatar:\n\n```python\nfrom ram_avatar.pipelines import RamAvatarPipeline\n\n"
            f"pipe = RamAvatarPipeline.from_pretrained({json.dumps(where)})\n"
            "avatar = pipe.avatar   # this network; pipe.template, pipe.shape and pipe.framing: its body and framing\n```"
        )  # fmt: skip
        card = self.avatar_files["README.md"].decode("utf-8")
        return rebuild_card(card, f"{self.name}: the network", INTRO, {CONSENT_HEADING: CONSENT[self.synthetic], USE_HEADING: usage})

    @property
    def synthetic(self) -> bool:
        """The avatar was made from a video of a rendered, synthetic person (``source["synthetic"]``)."""
        return bool(self.source.get("synthetic", False))

    def describe(self) -> dict[str, Any]:
        """What ``ram-avatar info`` prints: the manifest, the network's size and config, MDA parts."""
        config = getattr(self.avatar, "_hub_mixin_config", {}) or {}
        metrics = json.loads(self.avatar_files["metrics.json"]) if "metrics.json" in self.avatar_files else {}
        return {
            **self.manifest(), "network": type(self.avatar).__name__,
            "parameters": sum(p.numel() for p in self.avatar.parameters()), "config": config,
            "mda": self.has_mda, "face_rig": self.face_rig is not None,
            "training": {k: metrics.get(k) for k in ("config", "steps", "train_minutes", "held_out") if k in metrics},
        }  # fmt: skip

    # -- driving ---------------------------------------------------------------------------------

    def load_driving(self, motion: Any, fps: float | None = None, max_frames: int | None = None, progress: bool = True) -> Driving:
        """Any motion source -> :class:`Driving` at ``fps`` (default: the MDA decoder's rate, else
        the avatar's), at most ``max_frames`` frames. ``motion``: a motion file (BVH, AMASS /
        SMPL-X .npz / .json), a video (tracked once, cached; its face and expressions are used
        too, and its sound), a subject dataset folder, a :class:`~ram_avatar.motion.Motion` or a
        :class:`Driving`. Only the frames kept are resampled (and of a motion file, only those
        read); rates and frame counts are checked against ``ram_avatar.limits`` first."""
        from ram_avatar.data import load_subject
        from ram_avatar.motion import VIDEO_EXTENSIONS, Motion, load_motion
        from ram_avatar.motion.io import tracked_clip
        from ram_avatar.motion.sequence import canonicalise, resample

        fps = float(fps or (self.decoder.fps if self.decoder is not None else self.fps))
        if isinstance(motion, Driving):
            driving = motion
        elif isinstance(motion, Motion):
            driving = Driving(motion.pose, motion.fps, motion.name)
        else:
            path = Path(motion)
            is_video = path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS
            if is_video or (path.is_dir() and (path / "meta.json").is_file()):
                subject = load_subject(tracked_clip(path, progress) if is_video else path)
                expression = None
                if subject.template.name == self.template_name:
                    expression = torch.as_tensor(np.asarray(subject.expression, np.float32))
                rest = self._rest_for(subject)
                driving = Driving(
                    canonicalise(subject.pose), subject.fps, path.stem, expression,
                    subject_face_local(subject, self.template, rest), path if is_video else None,
                )  # fmt: skip
            else:
                motion = load_motion(path, fps, max_frames=max_frames)
                driving = Driving(motion.pose, motion.fps, motion.name)
        if driving.pose.batch_size == 0:
            raise ValueError(f"the motion {driving.name} has no frames")
        if abs(driving.fps - fps) > 1e-6:
            pose = resample(driving.pose, driving.fps, fps, max_frames, driving.name)
            T = pose.batch_size
            driving = replace(
                driving, pose=pose, fps=fps, expression=_nearest(driving.expression, driving.fps, fps, T),
                face_local=_nearest(driving.face_local, driving.fps, fps, T),
            )  # fmt: skip
        if max_frames is not None and driving.pose.batch_size > max_frames:
            keep = slice(0, max_frames)
            driving = replace(
                driving, pose=driving.pose[keep],
                expression=None if driving.expression is None else driving.expression[keep],
                face_local=None if driving.face_local is None else driving.face_local[keep],
            )  # fmt: skip
        return driving

    def _load_reported(
        self, motion: Any, fps: float | None, max_frames: int | None, progress: bool, callback: ProgressCallback | None
    ) -> Driving:
        """:meth:`load_driving`, reported to ``callback`` as stage ``"motion"``."""
        if callback is not None:
            callback("motion", 0, 1)
        driving = self.load_driving(motion, fps, max_frames, progress)
        if callback is not None:
            callback("motion", 1, 1)
        return driving

    def _rest_for(self, subject) -> torch.Tensor:
        """Rest joints (55, 3) of a tracked driving subject's own body (its face mesh hangs off them)."""
        if subject.template.name != self.template_name:
            return self._rest_joints()
        shape = torch.as_tensor(np.asarray(subject.shape, np.float32), device=self.device)[None]
        with torch.no_grad():
            return self.template(SmplxPose.zeros(1, device=self.device), shape).joints[0]

    @property
    def renderer(self) -> torch.nn.Module:
        """The network frames are rendered with: the avatar's fast inference path
        (``ram_avatar.models.fast``, built on first use) unless ``fast`` is off or the network is
        not a ``RamAvatar``."""
        from ram_avatar.models import RamAvatar
        from ram_avatar.models.fast import optimize_for_inference

        if not (self.fast and isinstance(self.avatar, RamAvatar)):
            return self.avatar
        if self._fast is None or self._fast[0] is not self.avatar:
            self._fast = (self.avatar, optimize_for_inference(self.avatar))
        return self._fast[1]

    @torch.no_grad()
    def stream(
        self,
        motion: Any,
        mda_strength: float = DEFAULT_STRENGTH,
        *,
        fps: float | None = None,
        overlay: bool = False,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        chunk: int = 16,
        max_frames: int | None = None,
        progress: bool = True,
        mda_log: dict[str, list] | None = None,
        callback: ProgressCallback | None = None,
    ) -> Iterator[RenderedFrame]:
        """Render ``motion`` frame by frame (see :meth:`load_driving` for what it may be).

        Frames come out in order as soon as their chunk of ``chunk`` frames is rendered; memory
        does not grow with the motion's length. ``mda_strength`` 0..1 (ignored without MDA).
        ``mda_log``, if given, collects the per-frame ``ood_before`` / ``ood_after`` / ``change_deg``.
        ``callback``, if given, hears of each stage's progress (see :data:`ProgressCallback`).

        Each chunk is prepared in one batch (MDA, posing, rasterizing), then rendered in one
        batch: a frame's temporal features are its predecessor's pooled texture features, which
        do not depend on the network, so consecutive frames need not wait for each other. On a
        CPU with 2+ threads, two chunks render at once, each on half of the threads (see
        :func:`stream_workers`); only MDA, which carries a latent from frame to frame, runs in
        order. The frames are the same either way.
        """
        from tqdm.auto import tqdm

        if not 0.0 <= mda_strength <= 1.0:
            raise ValueError(f"mda_strength must be within [0, 1] (0 = off, 1 = full), got {mda_strength}")
        if isinstance(motion, Driving) and fps is None and max_frames is None:
            driving = motion
        else:
            driving = self._load_reported(motion, fps, max_frames, progress, callback)
        state = _StreamState(self, driving)
        T = driving.pose.batch_size
        renderer = self.renderer
        workers = stream_workers(self.device)
        bar = tqdm(total=T, desc=f"animating {self.name}", unit="frame", disable=not progress)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="ram-avatar-chunk") if workers > 1 else None
        pending: collections.deque = collections.deque()  # rendered chunks (or their futures), in order
        with split_threads(workers):
            try:
                context = None  # the previous chunk's last pose (after MDA): the frame before the next
                for start in range(0, T, chunk):
                    frames = slice(start, min(start + chunk, T))
                    pose, mda = self._align_chunk(driving, frames, mda_strength, state)
                    if mda_log is not None:
                        for key, values in mda.items():
                            mda_log.setdefault(key, []).extend(values)
                    if callback is not None and mda:
                        callback("mda", frames.stop, T)
                    if pool is None:
                        prepared = self._prepare_chunk(driving, frames, pose, mda, overlay, state)
                        rendered, state.features = self._draw_chunk(prepared, renderer, background, state.features)
                        pending.append(rendered)
                    else:
                        job = (driving, frames, pose, context, mda, overlay, background, state, renderer)
                        pending.append(pool.submit(self._render_with_context, *job))
                        context = pose[-1:]
                    # With workers, one chunk more than they run waits its turn, so none idles.
                    while len(pending) > (workers if pool is not None and frames.stop < T else 0):
                        done = pending.popleft()
                        for frame in done if pool is None else done.result():
                            bar.update(1)
                            if callback is not None:
                                callback("render", frame.index + 1, T)
                            yield frame
            finally:
                if pool is not None:
                    for job in pending:
                        job.cancel()
                    pool.shutdown(wait=True)
                bar.close()

    @torch.no_grad()
    def _render_chunk(self, driving: Driving, frames: slice, strength: float, overlay: bool, background, state) -> list[RenderedFrame]:
        """The frames ``frames`` of ``driving``; carries the stream's ``state`` on."""
        pose, mda = self._align_chunk(driving, frames, strength, state)
        prepared = self._prepare_chunk(driving, frames, pose, mda, overlay, state)
        rendered, state.features = self._draw_chunk(prepared, self.renderer, background, state.features)
        return rendered

    @torch.no_grad()
    def _render_with_context(
        self, driving: Driving, frames: slice, pose: SmplxPose, context: SmplxPose | None, mda: dict, overlay: bool, background, state, renderer
    ) -> list[RenderedFrame]:
        """A chunk rendered without waiting for the one before: ``context`` is the pose of the
        frame before it (None for a first chunk), prepared along with the chunk for its pooled
        texture features alone (the previous features of the chunk's first frame)."""
        if context is None:
            return self._draw_chunk(self._prepare_chunk(driving, frames, pose, mda, overlay, state), renderer, background, None)[0]
        both = SmplxPose.from_full(torch.cat([context.full(), pose.full()]), torch.cat([context.transl, pose.transl]))
        prepared = self._prepare_chunk(driving, slice(frames.start - 1, frames.stop), both, mda, overlay, state)
        previous = renderer.features({name: value[:1] for name, value in prepared.maps.items()})
        shaded = None if prepared.shaded is None else tuple(x[1:] for x in prepared.shaded)
        chunk = _PreparedChunk(frames, {name: value[1:] for name, value in prepared.maps.items()}, shaded, mda)
        return self._draw_chunk(chunk, renderer, background, previous)[0]

    def _align_chunk(self, driving: Driving, frames: slice, strength: float, state) -> tuple[SmplxPose, dict[str, list]]:
        """MDA of the frames ``frames`` (in order: carries the latent in ``state``): their pose and
        the per-frame log (empty without MDA)."""
        pose = driving.pose[frames].to(self.device)
        if self.decoder is None:
            return pose, {}
        from ram_avatar.mda.align import align

        result = align(pose, self.prior, self.decoder, strength, former_latent=state.latent, check=False)  # see _StreamState
        state.latent = result.former_latent
        mda = {"ood_before": result.ood_before.tolist(), "ood_after": result.ood_after.tolist(), "change_deg": result.change_deg.tolist()}
        return result.pose.to(self.device), mda

    def _prepare_chunk(self, driving: Driving, frames: slice, pose: SmplxPose, mda: dict, overlay: bool, state) -> "_PreparedChunk":
        """Stage one of a chunk after MDA: cameras, face points, the avatar's input maps (and the
        overlay's shaded template) for the frames ``frames``, posed as ``pose``."""
        device = self.device
        template, shape = self.template, self.shape[None].to(device)
        pelvis = state.rest[0] + pose.transl
        pelvis[:, 1] = state.height  # follow on the ground plane only
        camera = self.framing.cameras(pelvis, self.image_size)
        expression = None
        if driving.expression is not None and driving.expression.shape[1] == template.expression_dim:
            expression = driving.expression[frames].to(device)
        face_points = self._face_points(pose, camera, driving, frames, state)
        maps = self.avatar.prepare_inputs(template, pose, camera, shape=shape, expression=expression, face_points=face_points)
        shaded = _shaded_template(template, pose, shape, expression, camera) if overlay else None
        return _PreparedChunk(frames, maps, shaded, mda)

    def _draw_chunk(
        self, prepared: "_PreparedChunk", renderer: torch.nn.Module, background, previous: torch.Tensor | None
    ) -> tuple[list[RenderedFrame], torch.Tensor]:
        """Stage two: the network, in batches of consecutive frames (16 at 256^2, fewer for larger
        frames), each frame taking its predecessor's features; ``previous`` (1, C, h, w): those of
        the frame before the first (None: a first frame). Returns the frames and the last one's
        features."""
        colour = torch.tensor(background, device=self.device).view(1, 3, 1, 1)
        ood_before, ood_after = prepared.mda.get("ood_before"), prepared.mda.get("ood_after")
        count = prepared.frames.stop - prepared.frames.start
        batch = render_batch(self.image_size)
        out_frames = []
        for first in range(0, count, batch):
            items = {k: v[first : first + batch] for k, v in prepared.maps.items()}
            if previous is not None:
                items["previous_features"] = previous  # (1, C, h, w): the frame before the first
            out = renderer(items)
            previous = out["features"][-1:]
            images = composite(out["rgb"], out["alpha"], colour)
            for j, image in enumerate(images):
                i = first + j
                over = None
                if prepared.shaded is not None:
                    colours, mask = prepared.shaded
                    alpha = 0.5 * mask[i, ..., None].cpu().numpy()
                    over = (image * (1 - alpha) + colours[i].cpu().numpy() * alpha).astype(np.uint8)
                index = prepared.frames.start + i
                out_frames.append(RenderedFrame(index, image, over, None if ood_before is None else ood_before[i], None if ood_after is None else ood_after[i]))
        return out_frames, previous

    def _face_points(self, pose: SmplxPose, camera: Camera, driving: Driving, frames: slice, state) -> torch.Tensor | None:
        """(B, 478, 3) (u, v, depth) of the face mesh placed on the driven head, or None (no face)."""
        if self.face_rig is None and driving.face_local is None:
            return None
        B = pose.batch_size
        local = self.face_rig.to(self.device).expand(B, -1, -1) if self.face_rig is not None else None
        if driving.face_local is not None:
            own = driving.face_local[frames].to(self.device)
            seen = ~own.isnan().any(-1).any(-1)
            if local is None:
                local = torch.where(seen[:, None, None], own, torch.zeros_like(own))
            else:
                local = torch.where(seen[:, None, None], own, local)
        rotation, position = head_transform(pose, state.rest)
        world = local @ rotation.transpose(1, 2) + position[:, None]
        pixels, depth = camera.project(world)
        points = torch.cat([pixels, depth[..., None].clamp_min(1e-3)], -1)
        return points * (local.abs().sum((-1, -2)) > 0)[:, None, None]  # a frame with no face at all draws nothing

    def __call__(
        self,
        motion: Any,
        mda_strength: float = DEFAULT_STRENGTH,
        *,
        out: str | os.PathLike | None = None,
        overlay: bool = False,
        overlay_out: str | os.PathLike | None = None,
        fps: float | None = None,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        max_frames: int | None = None,
        audio: bool = True,
        progress: bool = True,
        callback: ProgressCallback | None = None,
    ) -> AnimationResult:
        """Render ``motion`` (see :meth:`load_driving`) with MDA at ``mda_strength`` (0..1).

        With ``out`` (an .mp4 path) frames are encoded as they render (with the clip's sound when
        the motion is a video that has some and ``audio``); without, they are returned in
        ``frames``. ``overlay``: also the posed template drawn half-transparent over the avatar
        (to ``overlay_out``, or ``template_frames``). ``callback``: as for :meth:`stream`.
        """
        from ram_avatar.pipelines.video import VideoWriter

        start = time.perf_counter()
        driving = self._load_reported(motion, fps, max_frames, progress, callback)
        writer = over_writer = None
        threads = 1 if self.device.type == "cpu" else None  # the encoder shares the CPU with rendering
        if out is not None:
            writer = VideoWriter(out, driving.fps, driving.audio_source if audio else None, threads=threads)
        if overlay and overlay_out is not None:
            over_writer = VideoWriter(overlay_out, driving.fps, threads=threads)
        images, overlays, log, times = [], [], {}, []
        self.template, self.renderer  # loaded before the clock starts: render_fps is rendering only
        try:
            tick = time.perf_counter()
            for frame in self.stream(driving, mda_strength, overlay=overlay, background=background, progress=progress, mda_log=log,
                                     callback=callback):  # fmt: skip
                (writer.write if writer else images.append)(frame.image)
                if overlay:
                    (over_writer.write if over_writer else overlays.append)(frame.template)
                now = time.perf_counter()
                times.append(now - tick)
                tick = now
        except BaseException:
            for w in (writer, over_writer):
                if w is not None:
                    w.abort()
            raise
        try:
            video = writer.close() if writer else None
            template_video = over_writer.close() if over_writer else None
        finally:  # when the first close failed, the second video's temporary file goes too
            if over_writer is not None:
                over_writer.abort()  # a no-op once closed
        T = driving.pose.batch_size
        render = sum(times)
        return AnimationResult(
            fps=driving.fps, num_frames=T, frames=np.stack(images) if images else None,
            template_frames=np.stack(overlays) if overlays else None, video=video, template_video=template_video,
            ood_before=np.asarray(log["ood_before"]) if log else None, ood_after=np.asarray(log["ood_after"]) if log else None,
            change_deg=np.asarray(log["change_deg"]) if log else None, seconds=time.perf_counter() - start,
            render_fps=T / render if render > 0 else 0.0,
            extras={"median_frame_ms": 1000 * statistics.median(times) if times else None, "motion": driving.name},
        )  # fmt: skip


def composite(rgb: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> np.ndarray:
    """rgb (B, 3, H, W) over a background ``colour`` (1, 3, 1, 1) by alpha (B, 1, H, W), all in
    [0, 1] -> (B, H, W, 3) uint8 frames (a view of channel-first bytes: writers copy what they need)."""
    images = (rgb - colour).mul_(alpha).add_(colour).mul_(255).round_().clamp_(0, 255)  # colour + alpha (rgb - colour)
    return images.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def render_batch(image_size: tuple[int, int]) -> int:
    """Frames the network renders at once: 16 at 256^2, fewer for larger frames (the same memory).

    Larger batches spread each op's fixed costs over more frames: on 2 CPU cores at 256^2, 16
    stream ~6% faster than 8 (32 ~4% faster again, for twice the memory)."""
    return max(1, 16 * 256 * 256 // (image_size[0] * image_size[1]))


def stream_workers(device: torch.device) -> int:
    """Chunks a stream renders at once: 2 on a CPU with 2+ PyTorch threads (each chunk on half of
    them), else 1. On 2 CPU cores at 256^2, two chunks on one thread each stream 20-25% more frames/s
    than one chunk on both: a chunk's many small ops and compiled loops leave the second core idle
    or spinning in OpenMP's barriers."""
    return 2 if device.type == "cpu" and torch.get_num_threads() >= 2 else 1


@dataclass
class _PreparedChunk:
    """A chunk after stage one: its frames, input maps, overlay (colours, mask) and MDA log."""

    frames: slice
    maps: dict[str, torch.Tensor]
    shaded: tuple[torch.Tensor, torch.Tensor] | None
    mda: dict[str, list]


class _StreamState:
    """What carries from one chunk to the next: previous features, MDA latent, body reference."""

    def __init__(self, pipe: RamAvatarPipeline, driving: Driving):
        self.features = None
        self.latent = None
        if pipe.decoder is not None:  # once per stream, not per chunk (it hashes the prior's weights)
            from ram_avatar.mda.align import check_pair

            check_pair(pipe.prior, pipe.decoder)
        self.rest = pipe._rest_joints()
        # the height the framing's pelvis_uv refers to: the motion's median pelvis height
        self.height = float(self.rest[0, 1] + driving.pose.transl[:, 1].median())


def _shaded_template(template, pose: SmplxPose, shape: torch.Tensor, expression, camera: Camera):
    """The posed template shaded by canonical colour: (B, H, W, 3) uint8 and its mask (B, H, W)."""
    from ram_avatar.demo import shade
    from ram_avatar.render import interpolate, rasterize

    body = template(pose, shape, expression)
    fragments = rasterize(body.vertices, template.faces, camera, camera.image_size)
    canonical = interpolate(fragments, template.faces, template.canonical)
    normals = interpolate(fragments, template.faces, body.normals @ camera.R[0].T)
    return shade(canonical, fragments.mask, normals), fragments.mask


def subject_framing(subject, template, shape: torch.Tensor) -> tuple[Framing, torch.Tensor | None]:
    """The framing (how the training crops saw the body) and the face rig of a tracked subject."""
    device = template.faces.device
    pose = subject.pose.to(device)
    shape = shape.to(device)
    with torch.no_grad():
        rest = template(SmplxPose.zeros(1, device=device), shape[None]).joints[0]
    camera = subject.camera
    K = torch.as_tensor(np.asarray(camera.K, np.float32), device=device)
    R = torch.as_tensor(np.asarray(camera.R, np.float32), device=device)
    t = torch.as_tensor(np.asarray(camera.t, np.float32), device=device)
    pelvis = rest[0] + pose.transl  # the root rotates about the pelvis: no forward pass needed
    cam = (R @ pelvis[..., None])[..., 0] + t
    H, W = subject.image_size
    u = (K[:, 0, 0] * cam[:, 0] / cam[:, 2] + K[:, 0, 2]) / W
    v = (K[:, 1, 1] * cam[:, 1] / cam[:, 2] + K[:, 1, 2]) / H
    framing = Framing(float(K[:, 0, 0].median()), (float(u.median()), float(v.median())), float(cam[:, 2].median()))
    local = subject_face_local(subject, template, rest)
    face_rig = None
    if local is not None:
        seen = ~local.isnan().any(-1).any(-1)
        if seen.any():
            face_rig = local[seen].median(0).values.float().cpu()
    return framing, face_rig


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself when it is on the CPU, else a CPU copy (save_pretrained writes CPU tensors)."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        return model
    import copy

    return copy.deepcopy(model).cpu()
