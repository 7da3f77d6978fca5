"""Camera jitter: each training item seen through a slightly zoomed and shifted camera.

A clip shows its person from one camera at one distance, so a renderer trained long on ~100
frames learns where each frame's outline lies on the screen rather than how an outline follows
the body, and on motions far from the clip's (the README's wave) the silhouette frays. Jitter
draws, per item and step, a similarity ``A`` in pixels (a zoom and a roll about the image centre,
then a shift) and trains on the same frame as a camera with intrinsics ``A @ K`` sees it: the input
maps are rasterized again through that camera (exact: no resampled UV map blends across seams),
and the ground-truth frames, masks and 2D keypoints are warped by the same ``A``.

With a roll, ``A @ K`` is not upper triangular; the maps only project through it
(x -> K (R x + t)), which holds for any K whose last row is (0, 0, 1). Pixel coordinates follow
``ram_avatar.render.camera``: (0, 0) is the top-left pixel's corner, which is also
``grid_sample``'s ``align_corners=False`` convention, so the two warps agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ram_avatar.body.template import BodyTemplate
from ram_avatar.data import SubjectData
from ram_avatar.models.inputs import prepare_inputs
from ram_avatar.render import Camera
from ram_avatar.training.data import frame_params, subject_offsets, subject_shape

IMAGE_KEYS = ("image", "mask", "previous", "following", "previous_mask", "following_mask")


def jitter_matrices(
    batch_size: int,
    image_size: tuple[int, int],
    zoom: float,
    shift: float,
    seed: int,
    step: int,
    roll: float = 0.0,
) -> torch.Tensor:
    """(B, 3, 3) pixel similarities ``A``: about the image centre, a zoom ``s`` log-uniform in
    [1 / (1 + zoom), 1 + zoom] and a roll uniform in ±``roll`` degrees; then a shift uniform in
    ±``shift`` x (W, H). A pure function of (seed, step), like the batches, so that a resumed run
    draws the same cameras."""
    H, W = image_size
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step + 104_729)
    u = torch.rand(batch_size, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1)
    s = torch.exp(u[:, 0] * math.log1p(zoom))  # (B,)
    angle = u[:, 3] * math.radians(roll)
    cos, sin = s * torch.cos(angle), s * torch.sin(angle)
    centre = torch.tensor([W / 2, H / 2])
    A = torch.zeros(batch_size, 3, 3)
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = cos, -sin, sin, cos
    # p' = s Rot (p - centre) + centre + shift
    A[:, :2, 2] = centre - A[:, :2, :2] @ centre + u[:, 1:3] * shift * torch.tensor([W, H])
    A[:, 2, 2] = 1
    return A


def warp_images(images: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) as the jittered cameras ``A`` (B, 3, 3) see them: output pixel p'
    takes the input at A^-1 p' (bilinear; zero outside the frame, i.e. background)."""
    B, _, H, W = images.shape
    to_unit = images.new_tensor([[2 / W, 0, -1], [0, 2 / H, -1], [0, 0, 1]])  # pixels -> [-1, 1]
    theta = to_unit @ torch.linalg.inv(A.to(images)) @ torch.linalg.inv(to_unit)  # (B, 3, 3)
    grid = F.affine_grid(theta[:, :2], (B, 1, H, W), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_points(points: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Points (B, ..., 2 + k) whose first two values are pixel (u, v): (u, v) mapped by ``A``
    (B, 3, 3), the other values kept."""
    A = A.to(points).reshape(A.shape[0], *[1] * (points.dim() - 2), 3, 3)
    uv = A[..., :2, :2] @ points[..., :2, None] + A[..., :2, 2:]
    return torch.cat([uv[..., 0], points[..., 2:]], -1)


class CameraJitter:
    """Re-renders a training batch through jittered cameras (module docstring).

    Args:
        subject: the training subject (poses, cameras, expressions, offsets).
        template: its body template, on the device the batches are on.
        settings: the map cache's ``settings.json`` (``expand_distance``, ``attention_downsample``,
            ``expanded``), so the jittered maps are the cached maps' kind.
        zoom, shift, roll: the ranges of ``jitter_matrices``.
    """

    def __init__(
        self,
        subject: SubjectData,
        template: BodyTemplate,
        settings: dict,
        zoom: float,
        shift: float,
        roll: float = 0.0,
    ):
        self.subject, self.template, self.zoom, self.shift, self.roll = subject, template, zoom, shift, roll
        self.settings = settings
        device = template.faces.device
        self.shape = subject_shape(subject, device)
        self.offsets = subject_offsets(subject, device)

    def __call__(self, batch: dict, seed: int, step: int) -> dict:
        """``batch`` (a ``TripletDataset`` batch on the template's device) as the cameras that
        ``jitter_matrices`` draws for (seed, step) see it; see ``view``."""
        size = tuple(self.subject.image_size)
        A = jitter_matrices(len(batch["index"]), size, self.zoom, self.shift, seed, step, self.roll)
        return self.view(batch, A)

    def view(self, batch: dict, A: torch.Tensor) -> dict:
        """``batch`` with its images and maps replaced by what the cameras ``A @ K`` see, for
        pixel similarities ``A`` (B, 3, 3); a new dict, the input is left as it was."""
        device = self.template.faces.device
        size = tuple(self.subject.image_size)
        frames = batch["index"].tolist()
        A = A.to(device)
        pose, camera, expression = frame_params(self.subject, frames, device)
        previous = [max(t - 1, 0) for t in frames]  # as TripletDataset: frame 0 is its own predecessor
        previous_pose, previous_camera, previous_expression = frame_params(self.subject, previous, device)
        jittered = lambda cam: Camera(A @ cam.K, cam.R, cam.t, size)  # noqa: E731
        face = batch["maps"]["face_points"]  # (B, 478, 3); undetected rows are all 0 and stay so
        face = torch.where(face[..., 2:] > 0, warp_points(face, A), face)
        maps = prepare_inputs(
            self.template,
            pose,
            jittered(camera),
            shape=self.shape,
            expression=expression,
            hand_keypoints=warp_points(batch["maps"]["hand_keypoints"], A),
            face_points=face,
            previous_pose=previous_pose,
            previous_camera=jittered(previous_camera),
            previous_expression=previous_expression,
            offsets=self.offsets,
            expand_distance=self.settings["expand_distance"],
            attention_downsample=self.settings["attention_downsample"],
            expanded=self.settings["expanded"],
        )
        out = {**batch, "maps": {**batch["maps"], **{k: v for k, v in maps.items() if k in batch["maps"]}}}
        for key in IMAGE_KEYS:
            if key in batch:
                out[key] = warp_images(batch[key], A)
        return out
