"""Streaming: driving poses -> avatar frames, chunk by chunk, carrying state from frame to frame.

A :class:`Streamer` (``pipe.streamer(driving)``) renders one motion, or one live camera's frames,
in order: :meth:`Streamer.align` runs Motion Distribution Align, carrying its latent from frame
to frame; :meth:`Streamer.draw` poses the template, rasterizes it and runs the network, carrying
the temporal features of the last frame drawn. Live driving calls them once per camera frame::

    streamer = pipe.streamer(first_frame)            # a one-frame Driving: sets the framing's height
    pose, mda = streamer.align(frame, strength=0.5)  # each later frame in turn
    image = streamer.draw(frame, pose, mda)[0].image

:func:`stream_frames` (behind ``RamAvatarPipeline.stream``) renders a whole motion in chunks of a
few frames, two chunks at once on a CPU with 2+ threads (:func:`stream_workers`): a frame's
temporal features are its predecessor's pooled texture features, which do not depend on the
network, so a chunk prepared with the pose of the frame before it need not wait for the chunk
before; only MDA, which carries a latent, runs in order. The frames are the same either way.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.device import split_threads
from ram_avatar.pipelines.driving import Driving, head_transform
from ram_avatar.render import Camera

if TYPE_CHECKING:
    from ram_avatar.pipelines.ram_avatar_pipeline import RamAvatarPipeline

ProgressCallback = Callable[[str, int, int], None]
"""``callback(stage, done, total)`` of ``RamAvatarPipeline.stream`` and ``__call__``, in order:
``"motion"`` (0, 1) then (1, 1) around loading the motion (a clip is tracked then: the long part);
``"mda"`` (frames aligned, T) after each chunk's Motion Distribution Align (avatars with MDA only);
``"render"`` (frames rendered, T) as each frame comes out. MDA runs a chunk or two ahead of the
frames that come out."""


@dataclass
class RenderedFrame:
    """One rendered frame of a stream."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB, the avatar on the background
    template: np.ndarray | None  # (H, W, 3) uint8, the posed template over the avatar (overlay=True)
    ood_before: float | None  # MDA out-of-distribution score of the driving pose (~1 = like the subject)
    ood_after: float | None  # the same after alignment


class Streamer:
    """The state one stream carries from frame to frame: the MDA latent, the temporal features of
    the last frame drawn, and the body's reference (rest joints, the height the framing's
    ``pelvis_uv`` refers to: the median pelvis height of ``reference``, the motion or a live
    camera's first frame). Frames must be aligned, and drawn, in order.

    Args:
        pipe: the avatar.
        reference: the driving motion (or its first frame).
        overlay: :meth:`draw` also draws the posed template over the avatar (``RenderedFrame.template``).
        background: RGB in [0, 1] behind the avatar.
    """

    def __init__(
        self,
        pipe: RamAvatarPipeline,
        reference: Driving,
        *,
        overlay: bool = False,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ):
        self.pipe, self.overlay, self.background = pipe, overlay, background
        self.renderer = pipe.renderer
        self.latent: torch.Tensor | None = None  # MDA's, of the last frame aligned
        self.features: torch.Tensor | None = None  # (1, C, h, w) of the last frame drawn
        if pipe.decoder is not None:  # once per stream, not per chunk (it hashes the prior's weights)
            from ram_avatar.mda.align import check_pair

            check_pair(pipe.prior, pipe.decoder)
        self.rest = pipe.rest_joints()
        self.height = float(self.rest[0, 1] + reference.pose.transl[:, 1].median())

    @torch.no_grad()
    def align(
        self, driving: Driving, strength: float, frames: slice | None = None
    ) -> tuple[SmplxPose, dict[str, list]]:
        """MDA at ``strength`` (0..1) of the frames ``frames`` of ``driving`` (default all), after
        the frames aligned before: their pose, and the per-frame log (``ood_before``, ``ood_after``,
        ``change_deg``; empty when the avatar has no MDA)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"the MDA strength must be within [0, 1] (0 = off, 1 = full), got {strength}")
        frames = _all(driving) if frames is None else frames
        pipe = self.pipe
        pose = driving.pose[frames].to(pipe.device)
        if pipe.decoder is None:
            return pose, {}
        from ram_avatar.mda.align import align

        # check=False: the pair was checked once, in __init__
        result = align(pose, pipe.prior, pipe.decoder, strength, former_latent=self.latent, check=False)
        self.latent = result.former_latent
        log = {key: getattr(result, key).tolist() for key in ("ood_before", "ood_after", "change_deg")}
        return result.pose.to(pipe.device), log

    @torch.no_grad()
    def draw(
        self,
        driving: Driving,
        pose: SmplxPose | None = None,
        mda: dict[str, list] | None = None,
        frames: slice | None = None,
    ) -> list[RenderedFrame]:
        """The frames ``frames`` of ``driving`` (default all), posed as ``pose`` (default the
        driving's own; from :meth:`align` for MDA, its log ``mda``), after the frames drawn before
        (their temporal features carry on). A frame's ``index`` is its index in ``driving``."""
        frames = _all(driving) if frames is None else frames
        pose = driving.pose[frames].to(self.pipe.device) if pose is None else pose
        prepared = self._prepare(driving, frames, pose, mda or {})
        rendered, self.features = self._draw(prepared, self.features)
        return rendered

    @torch.no_grad()  # it runs on a pool's thread: grad mode is per thread
    def _draw_from_context(
        self, driving: Driving, frames: slice, pose: SmplxPose, context: SmplxPose | None, mda: dict[str, list]
    ) -> list[RenderedFrame]:
        """:meth:`draw` without waiting for the chunk before: ``context`` is the pose of the frame
        before ``frames`` (None for a first chunk), prepared along with the chunk for its pooled
        texture features alone (the previous features of the chunk's first frame). Carries nothing."""
        features = getattr(self.renderer, "features", None)
        if context is None or features is None:  # a first chunk, or a renderer without temporal features
            return self._draw(self._prepare(driving, frames, pose, mda), None)[0]
        both = SmplxPose.from_full(torch.cat([context.full(), pose.full()]), torch.cat([context.transl, pose.transl]))
        prepared = self._prepare(driving, slice(frames.start - 1, frames.stop), both, mda)
        previous = features({name: value[:1] for name, value in prepared.maps.items()})
        shaded = None if prepared.shaded is None else tuple(x[1:] for x in prepared.shaded)
        chunk = _PreparedChunk(frames, {name: value[1:] for name, value in prepared.maps.items()}, shaded, mda)
        return self._draw(chunk, previous)[0]

    def _prepare(self, driving: Driving, frames: slice, pose: SmplxPose, mda: dict[str, list]) -> _PreparedChunk:
        """Stage one of a chunk after MDA: cameras, face points, the avatar's input maps (and the
        overlay's shaded template) for the frames ``frames``, posed as ``pose``."""
        pipe = self.pipe
        template, shape, offsets = pipe.template, pipe.shape[None].to(pipe.device), pipe.body_offsets
        pelvis = self.rest[0] + pose.transl
        pelvis[:, 1] = self.height  # follow on the ground plane only
        camera = pipe.framing.cameras(pelvis, pipe.image_size)
        expression = None
        if driving.expression is not None and driving.expression.shape[1] == template.expression_dim:
            expression = driving.expression[frames].to(pipe.device)
        face_points = self._face_points(pose, camera, driving, frames)
        maps = pipe.avatar.prepare_inputs(
            template, pose, camera, shape=shape, expression=expression, face_points=face_points, offsets=offsets
        )
        shaded = _shaded_template(template, pose, shape, expression, offsets, camera) if self.overlay else None
        return _PreparedChunk(frames, maps, shaded, mda)

    def _draw(
        self, prepared: _PreparedChunk, previous: torch.Tensor | None
    ) -> tuple[list[RenderedFrame], torch.Tensor | None]:
        """Stage two: the network, in batches of consecutive frames (:func:`render_batch`), each
        frame taking its predecessor's features; ``previous`` (1, C, h, w): those of the frame
        before the first (None: a first frame). Returns the frames and the last one's features
        (None from a renderer without temporal features)."""
        pipe = self.pipe
        colour = torch.tensor(self.background, device=pipe.device).view(1, 3, 1, 1)
        ood_before, ood_after = prepared.mda.get("ood_before"), prepared.mda.get("ood_after")
        count = prepared.frames.stop - prepared.frames.start
        batch = render_batch(pipe.image_size)
        out_frames = []
        for first in range(0, count, batch):
            items = {k: v[first : first + batch] for k, v in prepared.maps.items()}
            if previous is not None:
                items["previous_features"] = previous  # (1, C, h, w): the frame before the first
            out = self.renderer(items)
            previous = out["features"][-1:] if "features" in out else None
            images = composite(out["rgb"], out["alpha"], colour)
            for j, image in enumerate(images):
                i = first + j
                over = None
                if prepared.shaded is not None:
                    colours, mask = prepared.shaded
                    alpha = 0.5 * mask[i, ..., None].cpu().numpy()
                    over = (image * (1 - alpha) + colours[i].cpu().numpy() * alpha).astype(np.uint8)
                out_frames.append(
                    RenderedFrame(
                        prepared.frames.start + i,
                        image,
                        over,
                        None if ood_before is None else ood_before[i],
                        None if ood_after is None else ood_after[i],
                    )
                )
        return out_frames, previous

    def _face_points(self, pose: SmplxPose, camera: Camera, driving: Driving, frames: slice) -> torch.Tensor | None:
        """(B, 478, 3) (u, v, depth) of the face mesh placed on the driven head, or None (no face)."""
        pipe = self.pipe
        if pipe.face_rig is None and driving.face_local is None:
            return None
        B = pose.batch_size
        local = pipe.face_rig.to(pipe.device).expand(B, -1, -1) if pipe.face_rig is not None else None
        if driving.face_local is not None:
            own = driving.face_local[frames].to(pipe.device)
            seen = ~own.isnan().any(-1).any(-1)
            if local is None:
                local = torch.where(seen[:, None, None], own, torch.zeros_like(own))
            else:
                local = torch.where(seen[:, None, None], own, local)
        rotation, position = head_transform(pose, self.rest)
        world = local @ rotation.transpose(1, 2) + position[:, None]
        pixels, depth = camera.project(world)
        points = torch.cat([pixels, depth[..., None].clamp_min(1e-3)], -1)
        return points * (local.abs().sum((-1, -2)) > 0)[:, None, None]  # a frame with no face at all draws nothing


@torch.no_grad()
def stream_frames(
    pipe: RamAvatarPipeline,
    driving: Driving,
    mda_strength: float,
    *,
    overlay: bool = False,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    chunk: int = 16,
    progress: bool = True,
    mda_log: dict[str, list] | None = None,
    callback: ProgressCallback | None = None,
) -> Iterator[RenderedFrame]:
    """The frames of ``driving``, in order, as soon as their chunk of ``chunk`` frames is rendered
    (module docstring); arguments as for ``RamAvatarPipeline.stream``."""
    from tqdm.auto import tqdm

    streamer = Streamer(pipe, driving, overlay=overlay, background=background)
    T = driving.pose.batch_size
    workers = stream_workers(pipe.device)
    bar = tqdm(total=T, desc=f"animating {pipe.name}", unit="frame", disable=not progress)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ram-avatar-chunk") if workers > 1 else None
    pending: collections.deque = collections.deque()  # rendered chunks (or their futures), in order
    with split_threads(workers):
        try:
            context = None  # the previous chunk's last pose (after MDA): the frame before the next
            for start in range(0, T, chunk):
                frames = slice(start, min(start + chunk, T))
                pose, mda = streamer.align(driving, mda_strength, frames)
                if mda_log is not None:
                    for key, values in mda.items():
                        mda_log.setdefault(key, []).extend(values)
                if callback is not None and mda:
                    callback("mda", frames.stop, T)
                if pool is None:
                    pending.append(streamer.draw(driving, pose, mda, frames))
                else:
                    pending.append(pool.submit(streamer._draw_from_context, driving, frames, pose, context, mda))
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


def _all(driving: Driving) -> slice:
    return slice(0, driving.pose.batch_size)


def _shaded_template(  # noqa: ANN202
    template,
    pose: SmplxPose,
    shape: torch.Tensor,
    expression: torch.Tensor | None,
    offsets: torch.Tensor | None,
    camera: Camera,  # noqa: ANN001
):
    """The posed template shaded by canonical colour: (B, H, W, 3) uint8 and its mask (B, H, W)."""
    from ram_avatar.demo import shade
    from ram_avatar.render import interpolate, rasterize

    body = template(pose, shape, expression, offsets)
    fragments = rasterize(body.vertices, template.faces, camera, camera.image_size)
    canonical = interpolate(fragments, template.faces, template.canonical)
    normals = interpolate(fragments, template.faces, body.normals @ camera.R[0].T)
    return shade(canonical, fragments.mask, normals), fragments.mask
