"""OpenCV pinhole cameras.

Conventions (shared by the whole ``ram_avatar.render`` package):

* World -> camera: ``x_cam = R @ x_world + t``. The camera looks down its +z axis, +x is image
  right, +y is image down (OpenCV). Depth is camera-space z.
* Pixels: continuous coordinates (u, v) = (column, row) with (0, 0) at the top-left *corner* of
  the top-left pixel, so pixel (row i, column j) covers [j, j+1) x [i, i+1) and has its centre
  at (j + 0.5, i + 0.5). Scaling an image by s then scales pixel coordinates by exactly s, which
  is what makes ``crop_resize`` exact.
* ``image_size`` is (H, W), shared by the whole batch; K, R, t are per batch item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Camera:
    """A batch of OpenCV pinhole cameras (see the module docstring for conventions).

    Attributes:
        K: (B, 3, 3) intrinsics in pixels, ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
        R: (B, 3, 3) world -> camera rotation.
        t: (B, 3) world -> camera translation.
        image_size: (H, W) in pixels.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        batch = self.K.shape[0]
        for name, shape in (("K", (batch, 3, 3)), ("R", (batch, 3, 3)), ("t", (batch, 3))):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Camera.{name} must be {shape}, got {tuple(getattr(self, name).shape)}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def batch_size(self) -> int:
        return self.K.shape[0]

    @property
    def center(self) -> torch.Tensor:
        """Camera centres in world coordinates, (B, 3)."""
        return -(self.R.transpose(1, 2) @ self.t[..., None])[..., 0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        """A copy on ``device`` and/or with floating ``dtype``."""
        move = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
        return Camera(move(self.K), move(self.R), move(self.t), self.image_size)

    def __getitem__(self, index: int | slice | torch.Tensor) -> Camera:
        """A sub-batch, e.g. ``camera[1:2]``."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Camera(self.K[index], self.R[index], self.t[index], self.image_size)

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """World points (B, N, 3) -> camera-space points (B, N, 3)."""
        return points @ self.R.transpose(1, 2) + self.t[:, None]

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (B, N, 3) -> pixels (B, N, 2) as (u, v), and depth (B, N) = camera z.

        Points at or behind the camera plane get meaningless pixels; check ``depth > 0``.
        """
        rows = self.project_rows(points)
        return rows[:, :2].transpose(1, 2), rows[:, 2]

    def project_rows(self, points: torch.Tensor) -> torch.Tensor:
        """World points (B, N, 3) -> (B, 3, N) rows u, v (pixels) and depth, each contiguous."""
        # One batched map x -> K (R x + t), laid out as rows (the fastest layout on CPU); K's
        # last row is (0, 0, 1), so the third row is the camera depth.
        h = torch.baddbmm(self.K @ self.t[..., None], self.K @ self.R, points.transpose(1, 2))
        return torch.cat([h[:, :2] / h[:, 2:], h[:, 2:]], dim=1)

    def unproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixels (B, N, 2) at camera depth (B, N) -> world points (B, N, 3); inverts ``project``."""
        fx, fy, skew = self.K[:, None, 0, 0], self.K[:, None, 1, 1], self.K[:, None, 0, 1]
        cx, cy = self.K[:, None, 0, 2], self.K[:, None, 1, 2]
        y = (pixels[..., 1] - cy) / fy
        x = (pixels[..., 0] - cx - skew * y) / fx
        cam = torch.stack([x * depth, y * depth, depth], dim=-1)
        return (cam - self.t[:, None]) @ self.R  # R^-1 = R^T, applied to row vectors

    def crop_resize(self, box: torch.Tensor | tuple[float, float, float, float], size: tuple[int, int]) -> Camera:
        """The camera of a crop of this camera's image, resized to ``size``.

        Args:
            box: (B, 4) or (4,) crop ``(u0, v0, u1, v1)`` in this camera's continuous pixel
                coordinates (it may extend past the image).
            size: (H', W') of the resized crop.
        Returns:
            A camera with ``image_size == size`` whose pixel ``p'`` shows what this camera sees
            at ``p = box[:2] + p' * (box[2:] - box[:2]) / (W', H')``: use that map to paste a
            rendered crop back into the original frame.
        """
        box = torch.as_tensor(box, dtype=self.K.dtype, device=self.K.device).expand(self.batch_size, 4)
        scale_u = size[1] / (box[:, 2] - box[:, 0])
        scale_v = size[0] / (box[:, 3] - box[:, 1])
        A = torch.zeros_like(self.K)
        A[:, 0, 0], A[:, 0, 2] = scale_u, -scale_u * box[:, 0]
        A[:, 1, 1], A[:, 1, 2] = scale_v, -scale_v * box[:, 1]
        A[:, 2, 2] = 1
        return Camera(A @ self.K, self.R, self.t, size)

    def resize(self, size: tuple[int, int]) -> Camera:
        """The camera of the whole image resized to ``size`` (H', W')."""
        H, W = self.image_size
        return self.crop_resize((0.0, 0.0, float(W), float(H)), size)

    @classmethod
    def look_at(
        cls,
        eye: torch.Tensor,
        target: torch.Tensor,
        up: torch.Tensor | tuple[float, float, float] = (0.0, 1.0, 0.0),
        focal: float | torch.Tensor = 1000.0,
        image_size: tuple[int, int] = (512, 512),
    ) -> Camera:
        """Cameras at ``eye`` (B, 3) looking at ``target`` (B, 3), world ``up`` pointing image-up
        (``up`` must not be parallel to the viewing direction).

        ``focal`` is in pixels (a float, or (B,)); the principal point is the image centre.
        E.g. ``eye=(0, 1, 3), target=(0, 1, 0)`` sees an SMPL-X body from the front, its left
        side (+X) on the image right.
        """
        eye, target = torch.atleast_2d(eye), torch.atleast_2d(target)
        up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
        forward = torch.nn.functional.normalize(target - eye, dim=-1)
        right = torch.nn.functional.normalize(torch.linalg.cross(forward, up, dim=-1), dim=-1)
        down = torch.linalg.cross(forward, right, dim=-1)  # right-handed: x cross y = z
        R = torch.stack([right, down, forward], dim=1)
        t = -(R @ eye[..., None])[..., 0]
        return cls(intrinsics(focal, image_size, eye.shape[0], eye), R, t, image_size)

    @classmethod
    def framing(
        cls,
        vertices: torch.Tensor,
        image_size: tuple[int, int] = (512, 512),
        margin: float = 0.05,
        fov_degrees: float = 20.0,
    ) -> Camera:
        """Front cameras (on the +Z side, looking toward -Z, +Y up) that fit each body in frame.

        Args:
            vertices: (B, V, 3) world points to frame (e.g. a posed body).
            image_size: (H, W).
            margin: fraction of the half-width/height left empty on the tightest side.
            fov_degrees: field of view across the larger image side.
        Returns:
            Cameras centred on each body's x/y bounding box, placed at the smallest distance
            at which every vertex lies inside the image with that margin.
        """
        H, W = image_size
        focal = max(H, W) / 2 / math.tan(math.radians(fov_degrees) / 2)
        low, high = vertices.amin(1), vertices.amax(1)  # (B, 3)
        centre = (low + high) / 2
        # A vertex at depth d = Z - z projects |x - cx| * f / d from the image centre; it must
        # stay within half the image size shrunk by the margin, so Z >= z + f |x - cx| / half.
        half = torch.tensor([W / 2, H / 2], dtype=vertices.dtype, device=vertices.device) * (1 - margin)
        offsets = (vertices[..., :2] - centre[:, None, :2]).abs() * focal / half  # (B, V, 2)
        distance = (vertices[..., 2:] + offsets).amax(dim=(1, 2))  # (B,)
        eye = torch.stack([centre[:, 0], centre[:, 1], distance], dim=-1)
        target = torch.stack([centre[:, 0], centre[:, 1], distance - 1], dim=-1)
        return cls.look_at(eye, target, focal=focal, image_size=image_size)


def intrinsics(
    focal: float | torch.Tensor,
    image_size: tuple[int, int],
    batch_size: int = 1,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 3, 3) pinhole intrinsics with focal length ``focal`` (pixels; float or (B,)) and the
    principal point at the image centre; dtype and device follow ``like``."""
    H, W = image_size
    kwargs = {} if like is None else {"dtype": like.dtype, "device": like.device}
    focal = torch.as_tensor(focal, **kwargs).expand(batch_size)
    K = torch.zeros(batch_size, 3, 3, **kwargs)
    K[:, 0, 0], K[:, 1, 1] = focal, focal
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1
    return K
