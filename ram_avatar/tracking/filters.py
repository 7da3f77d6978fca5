"""Temporal filters for live tracking: the One-Euro filter, and a pose filter built on it.

One-Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter", CHI 2012): a first-order low-pass
whose cutoff frequency rises with the signal's speed, ``cutoff = min_cutoff + beta * |speed|``.
At rest it smooths hard (jitter is what a still pose shows), in fast motion it follows closely
(lag is what a moving pose shows). Its price is latency: at rest, a first-order low-pass with
cutoff ``f`` lags a slow drift by its time constant ``1 / (2 pi f)``; the faster the motion,
the smaller the lag.

:class:`PoseFilter` filters SMPL-X-layout poses: each joint rotation in its 6D form (the first
two columns of its rotation matrix, continuous everywhere, unlike axis-angle, which jumps where
its angle passes pi, as a body turning its back to the camera does), turned back into a
rotation by Gram-Schmidt; the translation and facial actions as they are.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ram_avatar.body.layout import NUM_JOINTS, SmplxPose


def _smoothing(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential smoothing factor of a first-order low-pass at ``cutoff`` Hz, step ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over arrays of shape (n, d): n independent rows of d components.

    A row's speed is the norm of its d components' rates of change, so the components of one
    quantity (a joint's 6D rotation, a 3D position) are filtered alike and stay consistent.

    Args:
        min_cutoff: cutoff at rest, Hz (lower: smoother and more lag at rest).
        beta: cutoff increase per unit of speed (units of x per second; higher: less lag in motion).
        d_cutoff: cutoff of the low-pass on the speed estimate, Hz.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"One-Euro filter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, "
                f"got {min_cutoff}, {d_cutoff}, {beta}"
            )
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next value passes through unfiltered."""
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """The filtered value of ``x`` (n, d) observed at time ``t`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.x.shape != x.shape:
            self.x, self.dx, self.t = x.copy(), np.zeros(x.shape[0]), t
            return x.copy()
        dt = max(t - self.t, 1e-6)  # a repeated timestamp adds (almost) nothing
        speed = np.linalg.norm(x - self.x, axis=-1) / dt
        self.dx = self.dx + _smoothing(self.d_cutoff, dt) * (speed - self.dx)
        alpha = _smoothing(self.min_cutoff + self.beta * self.dx, dt)[:, None]
        self.x, self.t = self.x + alpha * (x - self.x), t
        return self.x.copy()

    def lag(self, fps: float) -> float:
        """Delay (frames) with which it follows a slow drift at rest: its time constant."""
        return fps / (2.0 * math.pi * self.min_cutoff)


def rotations_to_6d(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle (n, 3) -> the first two columns of each rotation matrix, (n, 6)."""
    matrices = Rotation.from_rotvec(rotvec).as_matrix()
    return matrices[:, :, :2].transpose(0, 2, 1).reshape(len(rotvec), 6)


def rotations_from_6d(six: np.ndarray) -> np.ndarray:
    """(n, 6) two (not necessarily orthonormal) columns -> axis-angle (n, 3), by Gram-Schmidt."""
    a, b = six[:, :3], six[:, 3:]
    x = a / np.linalg.norm(a, axis=1, keepdims=True)
    y = b - (x * b).sum(1, keepdims=True) * x
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    matrices = np.stack([x, y, np.cross(x, y)], axis=2)
    return Rotation.from_matrix(matrices).as_rotvec()


class PoseFilter:
    """One-Euro filtering of one pose stream (batch 1) and its facial actions.

    Defaults (rotation: 6D components are unit vectors, so their speed is about the joint's
    angular speed in rad/s; translation in m/s; actions in units/s) were chosen on the shared
    clips (``benchmarks/live_pose_quality.py``): they cut the body joints' jitter 2-3.5x for a
    lag of 17-22 ms (0.5-1.3 frames) on those clips; a slow drift, at which the cutoff stays
    near ``min_cutoff``, lags by up to ``1 / (2 pi min_cutoff)`` = 106 ms.
    """

    def __init__(
        self,
        rotation: tuple[float, float] = (1.5, 1.0),
        translation: tuple[float, float] = (1.5, 1.0),
        expression: tuple[float, float] = (2.0, 1.0),
    ):
        self.rotation = OneEuroFilter(*rotation)
        self.translation = OneEuroFilter(*translation)
        self.expression = OneEuroFilter(*expression)

    def reset(self) -> None:
        for f in (self.rotation, self.translation, self.expression):
            f.reset()

    def __call__(
        self, pose: SmplxPose, expression: torch.Tensor | None, t: float
    ) -> tuple[SmplxPose, torch.Tensor | None]:
        """The filtered pose (batch 1) and expression (1, E) or None, observed at ``t`` seconds."""
        full = pose.full()[0].detach().cpu().double().numpy()  # (55, 3)
        six = self.rotation(rotations_to_6d(full), t)
        transl = self.translation(pose.transl.detach().cpu().double().numpy(), t)
        dtype, device = pose.transl.dtype, pose.transl.device
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        out = SmplxPose.from_full(as_tensor(rotations_from_6d(six)).reshape(1, NUM_JOINTS, 3), as_tensor(transl))
        if expression is not None:
            values = self.expression(expression.detach().cpu().double().numpy().reshape(-1, 1), t)
            expression = torch.as_tensor(values.reshape(1, -1), dtype=expression.dtype, device=expression.device)
        return out, expression
