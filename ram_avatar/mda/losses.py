"""Training losses of the pose prior and the subject decoder.

All take rotation matrices of the 21 body joints, (B, 21, 3, 3), local to the parent joint, in
SMPL-X's rest-pose axes (+Y up, facing +Z, the body's left at +X).
"""

from __future__ import annotations

import math

import torch

from ram_avatar.body.layout import PARENTS

# Hinge joints (body-joint index 0..20) with the rest direction of their child bone and the
# direction that bone must not swing to. Knees flex when the shin swings back (-Z); they must
# not go forward (+Z). Elbows flex when the forearm swings forward (+Z) from the T-pose; they
# must not go backward (-Z). (Verified against SMPL-X: +x rotation bends the knee, the left
# elbow bends about -y, the right about +y.)
HINGES: tuple[tuple[int, tuple[float, float, float], tuple[float, float, float]], ...] = (
    (3, (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),  # left knee
    (4, (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),  # right knee
    (17, (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # left elbow
    (18, (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # right elbow
)


def rotation_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over batch and joints of ||R - R*||_F^2 (= 4 (1 - cos angle), smooth near zero)."""
    return (predicted - target).square().sum((-2, -1)).mean()


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over the latent, averaged over the batch (B, D)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()


def hinge_limit_loss(matrices: torch.Tensor, margin_degrees: float = 10.0) -> torch.Tensor:
    """Squared overshoot of knees and elbows bending the wrong way, beyond ``margin_degrees``."""
    index = [joint for joint, _, _ in HINGES]
    bone = matrices.new_tensor([bone for _, bone, _ in HINGES])  # (4, 3)
    forbidden = matrices.new_tensor([f for _, _, f in HINGES])
    swung = torch.einsum("bjik,jk->bji", matrices[:, index], bone)  # posed child bone directions
    overshoot = (swung * forbidden).sum(-1) - math.sin(math.radians(margin_degrees))
    return overshoot.clamp_min(0).square().sum(-1).mean()


def body_joint_positions(matrices: torch.Tensor, rest_joints: torch.Tensor) -> torch.Tensor:
    """Forward kinematics of pelvis + 21 body joints with the root fixed.

    Args:
        matrices: local body joint rotations (B, 21, 3, 3).
        rest_joints: rest-pose positions of SMPL-X joints 0..21 (22, 3), from the body template.
    Returns:
        joint positions relative to the pelvis (B, 22, 3).
    """
    batch = matrices.shape[0]
    eye = torch.eye(3, dtype=matrices.dtype, device=matrices.device).expand(batch, 3, 3)
    world = [eye]
    positions = [matrices.new_zeros(batch, 3)]
    for joint in range(1, 22):
        parent = PARENTS[joint]
        offset = rest_joints[joint] - rest_joints[parent]
        positions.append(positions[parent] + world[parent] @ offset)
        world.append(world[parent] @ matrices[:, joint - 1])
    return torch.stack(positions, dim=1)


def position_loss(predicted: torch.Tensor, target: torch.Tensor, rest_joints: torch.Tensor) -> torch.Tensor:
    """Mean joint position error in metres of two body poses (B, 21, 3, 3) on one skeleton."""
    return (
        (body_joint_positions(predicted, rest_joints) - body_joint_positions(target, rest_joints)).norm(dim=-1).mean()
    )
