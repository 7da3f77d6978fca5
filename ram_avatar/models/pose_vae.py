"""The body pose prior: a VPoser-like variational auto-encoder of the 21 SMPL-X body joints.

Paper section 3.3 (Motion Distribution Align): a VAE trained on generic motion gives a latent
space where poses are compared and where the subject's conditional decoder
(:class:`~ram_avatar.models.pose_decoder.SubjectPoseDecoder`) reads from. Body joint rotations go
in as 6D (continuous, Zhou et al. 2019), a 32-d Gaussian latent sits in the middle, 6D comes out
and is Gram-Schmidt-ed into rotation matrices. Root orientation, hands, face and translation are
not modelled: alignment keeps them as they are.

Differences from VPoser (Pavlakos et al. 2019), on purpose: LayerNorm instead of BatchNorm, so
a single frame encodes the same in training and at run time and no batch statistics have to be
synchronised across GPUs; 6D input instead of axis-angle (no wrap-around at pi).
"""

from __future__ import annotations

import torch
from torch import nn

from ram_avatar.models.hub import HubModel
from ram_avatar.rotations import aa_to_matrix, matrix_to_6d, matrix_to_aa, sixd_to_matrix

NUM_BODY_JOINTS = 21


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dropout: float) -> nn.Sequential:
    """``num_layers`` hidden Linear + LayerNorm + LeakyReLU blocks, then a Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers += [
            nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
        ]
    layers.append(nn.Linear(hidden_dim if num_layers else in_dim, out_dim))
    return nn.Sequential(*layers)


class PoseVAE(
    nn.Module,
    HubModel,
    library_name="ram-avatar",
    tags=["ram-avatar", "pose-prior", "smplx", "vae"],
):
    """Body-pose VAE: (B, 21, 3) axis-angle -> N(mean, exp(logvar)) in R^latent_dim -> (B, 21, 3, 3).

    Args:
        latent_dim: size of the latent code (VPoser: 32).
        hidden_dim: width of the encoder and decoder MLPs.
        num_layers: hidden layers in each MLP.
        dropout: dropout in the hidden layers (active in ``train()`` only).
        num_joints: body joints modelled (21 = SMPL-X joints 1..21).
    """

    def __init__(
        self,
        latent_dim: int = 32,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.1,
        num_joints: int = NUM_BODY_JOINTS,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_joints = num_joints
        self.encoder = mlp(num_joints * 6, hidden_dim, 2 * latent_dim, num_layers, dropout)
        self.decoder = mlp(latent_dim, hidden_dim, num_joints * 6, num_layers, dropout)

    def _check(self, body_pose: torch.Tensor) -> None:
        if body_pose.dim() != 3 or body_pose.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"body_pose must be axis-angle (B, {self.num_joints}, 3), got {tuple(body_pose.shape)}")

    def encode(self, body_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Axis-angle body pose (B, 21, 3) -> latent mean (B, D) and log-variance (B, D)."""
        self._check(body_pose)
        return self.encode_rotations(aa_to_matrix(body_pose))

    def encode_rotations(self, rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode`` for body joint rotation matrices (B, 21, 3, 3)."""
        mean, logvar = self.encoder(matrix_to_6d(rotations).flatten(1)).chunk(2, dim=-1)
        return mean, logvar.clamp(-12.0, 6.0)  # keeps exp() finite early in training

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, D) -> body joint rotation matrices (B, 21, 3, 3)."""
        return sixd_to_matrix(self.decoder(latent).view(-1, self.num_joints, 6))

    def decode_aa(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, D) -> axis-angle body pose (B, 21, 3)."""
        return matrix_to_aa(self.decode(latent))

    def forward(self, body_pose: torch.Tensor, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Encode and decode (B, 21, 3).

        Returns ``mean``, ``logvar`` (B, D), the code decoded ``latent`` (B, D) — a posterior
        sample when ``sample`` (default: in ``train()`` mode), else the mean — and the decoded
        ``matrices`` (B, 21, 3, 3).
        """
        mean, logvar = self.encode(body_pose)
        sample = self.training if sample is None else sample
        latent = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return {"mean": mean, "logvar": logvar, "latent": latent, "matrices": self.decode(latent)}

    @torch.no_grad()
    def reconstruct(self, body_pose: torch.Tensor) -> torch.Tensor:
        """Deterministic round trip through the latent mean: (B, 21, 3) -> (B, 21, 3)."""
        return matrix_to_aa(self.decode(self.encode(body_pose)[0]))
