"""RamAvatarPipeline: a whole avatar (folder or Hub repo) driven by any motion, rendered to video.

    pipe = RamAvatarPipeline.from_pretrained("examples/avatars/dancer-rt256")   # or a Hub id
    result = pipe("examples/motions/wave_hello.bvh", out="wave.mp4", mda_strength=0.5)
    for frame in pipe.stream("dance.mp4"): show(frame.image)                 # as they render

Motion (a file, a clip, a ``Motion``) -> [tracked, when it is a clip] -> Motion Distribution Align
(when the avatar has a pose decoder; strength 0..1) -> template + rasterization -> the avatar
network -> RGB frames, in chunks of a few frames so that memory stays bounded however long the
motion is. The pipeline ties together one module per job:

- :mod:`ram_avatar.pipelines.format`: the avatar folder (layout, ``avatar.json``,
  ``model_index.json``), saved and loaded through :mod:`ram_avatar.registry`;
- :mod:`ram_avatar.pipelines.driving`: any motion input -> :class:`Driving` poses;
- :mod:`ram_avatar.pipelines.framing`: the camera that follows the body;
- :mod:`ram_avatar.pipelines.streaming`: rendering in order, carrying MDA's latent and the
  temporal features (:class:`Streamer`, public: live driving uses it), chunks on two threads.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.pipelines.driving import Driving, head_transform, load_driving
from ram_avatar.pipelines.folder import FORMAT, HUB_PATTERNS, VERSION, AvatarFormatError
from ram_avatar.pipelines.format import load_avatar_folder, load_network, save_avatar_folder
from ram_avatar.pipelines.framing import Framing, subject_framing
from ram_avatar.pipelines.streaming import (
    ProgressCallback,
    RenderedFrame,
    Streamer,
    composite,
    render_batch,
    stream_frames,
    stream_workers,
)

__all__ = [  # the names other modules import from here: the pipeline's own, and its parts' (as before the split)
    "AnimationResult",
    "AvatarFormatError",
    "Driving",
    "Framing",
    "ProgressCallback",
    "RamAvatarPipeline",
    "RenderedFrame",
    "Streamer",
    "composite",
    "head_transform",
    "render_batch",
    "stream_workers",
]


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

        scores = (torch.as_tensor(a) for a in (self.ood_before, self.ood_after, self.change_deg))
        result = AlignResult(None, *scores, None)
        return plot_ood(result, self.fps, path, title)


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
        offsets: torch.Tensor | None = None,
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
        # (V,) surface offsets of the subject's body (clothes, hair; BodyTemplate.forward), or None
        self.offsets = None if offsets is None else torch.as_tensor(offsets, dtype=torch.float32).flatten()
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

    # -- parts -------------------------------------------------------------------------------------

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
            if self.offsets is not None and self.offsets.numel() != self._template.num_vertices:
                raise AvatarFormatError(
                    f"the avatar's surface offsets have {self.offsets.numel()} values but the {self.template_name} "
                    f"template has {self._template.num_vertices} vertices: the avatar was made with another template"
                )
        return self._template

    @property
    def body_offsets(self) -> torch.Tensor | None:
        """The surface offsets (V,) on the pipeline's device, checked against the template, or None."""
        if self.offsets is None:
            return None
        self.template  # noqa: B018  (loads the template and checks the offsets' length)
        return self.offsets.to(self.device)

    @property
    def has_mda(self) -> bool:
        return self.decoder is not None

    def rest_joints(self) -> torch.Tensor:
        """(55, 3) the template's joints at zero pose for the avatar's body shape."""
        with torch.no_grad():
            return self.template(SmplxPose.zeros(1, device=self.device), self.shape[None].to(self.device)).joints[0]

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
        """Load an avatar folder (:mod:`ram_avatar.pipelines.format`), or download one from the Hub
        (respects ``HF_HUB_OFFLINE``: offline, only what is in the local Hub cache is used). Its
        parts are the classes ``model_index.json`` names (:mod:`ram_avatar.registry`). The folder
        is checked before anything is loaded (:mod:`ram_avatar.pipelines.validate`): a damaged or
        oversized avatar is an ``AvatarFormatError`` / ``LimitError`` naming the file."""
        parts = load_avatar_folder(folder_or_hub_id, revision, token)
        return cls(**parts, device=device, body_model_path=body_model_path)

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
        """Assemble a whole avatar from its subject dataset and trained parts (the avatar network or
        its folder, optional MDA decoder + prior): the body shape, framing, fps and face rig come from the subject.
        ``synthetic``: the video shows a rendered, synthetic person, not a real one (recorded in
        ``source``; the model cards say so instead of asking for the person's consent)."""
        from ram_avatar.body import load_template
        from ram_avatar.data import load_subject

        subject = load_subject(subject_dir)
        extras = {}
        if not isinstance(avatar, torch.nn.Module):
            avatar, extras = load_network(avatar)  # of the class its training recorded (registry)
        if decoder is not None and not isinstance(decoder, torch.nn.Module):
            from ram_avatar.mda.load import load_decoder

            decoder = load_decoder(decoder)
        if prior is not None and not isinstance(prior, torch.nn.Module):
            from ram_avatar.mda.load import load_prior

            prior = load_prior(prior)
        template = load_template(subject.template.name, model_path=body_model_path)
        shape = torch.as_tensor(np.asarray(subject.shape, np.float32))
        framing, face_rig = subject_framing(subject, template, shape)
        info = {
            "name": subject.template.name,
            "shape_space": subject.template.shape_space,
            "expression_space": subject.template.expression_space,
        }
        return cls(
            avatar,
            subject.template.name,
            shape,
            framing,
            subject.fps,
            subject.image_size,
            face_rig=face_rig,
            decoder=decoder,
            prior=prior,
            name=name or Path(subject_dir).name,
            template_info=info,
            source={"video": subject.source_video, "frames": subject.num_frames, "synthetic": synthetic},
            avatar_files=extras,
            device=device,
            body_model_path=body_model_path,
            offsets=subject.offsets,
        )

    def manifest(self) -> dict[str, Any]:
        """The ``avatar.json`` content (:mod:`ram_avatar.pipelines.format`)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "template": {**self.template_info, "name": self.template_name, "shape": [float(v) for v in self.shape]},
            "image_size": list(self.image_size),
            "fps": self.fps,
            "framing": self.framing.to_dict(),
            "source": self.source,
        }

    def save_pretrained(self, folder: str | os.PathLike, repo_id: str | None = None) -> Path:
        """Write the whole avatar folder (:mod:`ram_avatar.pipelines.format`, ``model_index.json``
        included) atomically: built under a temporary name beside ``folder`` and renamed into place
        (an existing folder is replaced). The model cards' snippets load the avatar from
        ``repo_id`` (when it will be pushed there), else from ``folder`` as given."""
        return save_avatar_folder(self, folder, repo_id)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload ram-avatar avatar",
    ) -> Any:
        """Upload the whole avatar folder to the Hub model repo ``repo_id`` (JSON, safetensors,
        Markdown and PNG only); returns the commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "avatar", repo_id=repo.repo_id)
            return api.upload_folder(
                repo_id=repo.repo_id,
                folder_path=str(folder),
                repo_type="model",
                allow_patterns=HUB_PATTERNS,
                commit_message=commit_message,
            )

    def model_card(self, where: str) -> str:
        """The folder's README.md, for the folder or Hub repo ``where`` (its snippets load from
        there): see :func:`ram_avatar.training.card.folder_card`."""
        from ram_avatar.training.card import folder_card

        return folder_card(self, where)

    def network_card(self, where: str) -> str:
        """The network's own card (``avatar/README.md``, when it came with one) inside the folder or
        Hub repo ``where``: see :func:`ram_avatar.training.card.folder_network_card`."""
        from ram_avatar.training.card import folder_network_card

        return folder_network_card(self, where)

    @property
    def synthetic(self) -> bool:
        """The avatar was made from a video of a rendered, synthetic person (``source["synthetic"]``)."""
        return bool(self.source.get("synthetic", False))

    def describe(self) -> dict[str, Any]:
        """What ``ram-avatar info`` prints: the manifest, the network's size and config, MDA parts."""
        config = getattr(self.avatar, "_hub_mixin_config", {}) or {}
        metrics = json.loads(self.avatar_files["metrics.json"]) if "metrics.json" in self.avatar_files else {}
        return {
            **self.manifest(),
            "network": type(self.avatar).__name__,
            "parameters": sum(p.numel() for p in self.avatar.parameters()),
            "config": config,
            "mda": self.has_mda,
            "face_rig": self.face_rig is not None,
            "surface_offsets": self.offsets is not None,
            "training": {k: metrics.get(k) for k in ("config", "steps", "train_minutes", "held_out") if k in metrics},
        }

    # -- driving ---------------------------------------------------------------------------------

    def load_driving(
        self, motion: Any, fps: float | None = None, max_frames: int | None = None, progress: bool = True
    ) -> Driving:
        """Any motion source -> :class:`Driving` at ``fps`` (default: the MDA decoder's rate, else
        the avatar's), at most ``max_frames`` frames. ``motion``: a motion file (BVH, AMASS /
        SMPL-X .npz / .json), a video (tracked once, cached; its face and expressions are used
        too, and its sound), a subject dataset folder, a :class:`~ram_avatar.motion.Motion` or a
        :class:`Driving`. Only the frames kept are resampled (and of a motion file, only those
        read); rates and frame counts are checked against ``ram_avatar.limits`` first."""
        return load_driving(self, motion, fps, max_frames, progress)

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

    # -- rendering -------------------------------------------------------------------------------

    def streamer(
        self, reference: Driving, *, overlay: bool = False, background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ) -> Streamer:
        """A :class:`Streamer` that renders frames in order, carrying MDA's latent and the temporal
        features from one call to the next (what live driving uses, one frame at a time);
        ``reference``: the motion, or a live camera's first frame (the framing's height)."""
        return Streamer(self, reference, overlay=overlay, background=background)

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
        :func:`~ram_avatar.pipelines.streaming.stream_workers`); only MDA, which carries a latent
        from frame to frame, runs in order. The frames are the same either way.
        """
        if not 0.0 <= mda_strength <= 1.0:
            raise ValueError(f"mda_strength must be within [0, 1] (0 = off, 1 = full), got {mda_strength}")
        if isinstance(motion, Driving) and fps is None and max_frames is None:
            driving = motion
        else:
            driving = self._load_reported(motion, fps, max_frames, progress, callback)
        yield from stream_frames(
            self,
            driving,
            mda_strength,
            overlay=overlay,
            background=background,
            chunk=chunk,
            progress=progress,
            mda_log=mda_log,
            callback=callback,
        )

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
        _ = self.template, self.renderer  # loaded before the clock starts: render_fps is rendering only
        try:
            tick = time.perf_counter()
            frames = self.stream(
                driving,
                mda_strength,
                overlay=overlay,
                background=background,
                progress=progress,
                mda_log=log,
                callback=callback,
            )
            for frame in frames:
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
            fps=driving.fps,
            num_frames=T,
            frames=np.stack(images) if images else None,
            template_frames=np.stack(overlays) if overlays else None,
            video=video,
            template_video=template_video,
            ood_before=np.asarray(log["ood_before"]) if log else None,
            ood_after=np.asarray(log["ood_after"]) if log else None,
            change_deg=np.asarray(log["change_deg"]) if log else None,
            seconds=time.perf_counter() - start,
            render_fps=T / render if render > 0 else 0.0,
            extras={"median_frame_ms": 1000 * statistics.median(times) if times else None, "motion": driving.name},
        )
