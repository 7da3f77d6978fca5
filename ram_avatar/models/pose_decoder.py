"""The subject's conditional pose decoder of Motion Distribution Align (paper section 3.3).

Trained on one subject's tracked poses only, with the pose prior's encoder frozen: it reads the
prior latent of the current pose and of the former pose and outputs a body pose the subject
could have made. Trained as a denoiser (inputs pushed off the subject's latents, targets kept
on them, see :mod:`ram_avatar.mda.train`), it maps latents near the subject's poses to those
poses and pulls latents away from them back in.

It also carries the subject's latent distribution (mean and precision, as buffers) for the
out-of-distribution score, and records which prior it was trained against: its latents mean
nothing under another prior, so :func:`ram_avatar.mda.align` refuses a mismatched pair.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ram_avatar.models.hub import HubModel
from ram_avatar.models.pose_vae import NUM_BODY_JOINTS, mlp
from ram_avatar.rotations import sixd_to_matrix


def fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex, first 16 digits) of a model's state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class SubjectPoseDecoder(
    nn.Module,
    HubModel,
    library_name="ram-avatar",
    tags=["ram-avatar", "pose-prior", "smplx", "motion-align"],
):
    """(current latent (B, D), former latent (B, D)) -> body joint rotations (B, 21, 3, 3).

    Args:
        latent_dim: the prior's latent size.
        hidden_dim / num_layers / dropout: the MLP.
        num_joints: body joints (21).
        fps: frame rate of the subject poses it was trained on; "former" means 1/fps earlier.
        prior: where the prior came from (Hub id or folder), for people reading config.json.
        prior_fingerprint: :func:`fingerprint` of the prior's weights; checked at align time.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        hidden_dim: int = 256,
        num_layers: int = 3,
        dropout: float = 0.0,
        num_joints: int = NUM_BODY_JOINTS,
        fps: float = 30.0,
        prior: str = "",
        prior_fingerprint: str = "",
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_joints = num_joints
        self.fps = fps
        self.prior = prior
        self.prior_fingerprint = prior_fingerprint
        self.net = mlp(2 * latent_dim, hidden_dim, num_joints * 6, num_layers, dropout)
        # The subject's latent distribution (set by set_latent_statistics, saved with the weights).
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_precision", torch.eye(latent_dim))
        self.register_buffer("ood_scale", torch.tensor(float(latent_dim)))  # mean squared distance

    def forward(self, latent: torch.Tensor, former_latent: torch.Tensor) -> torch.Tensor:
        """Latents of the current and the former pose (B, D) each -> rotations (B, 21, 3, 3)."""
        out = self.net(torch.cat([latent, former_latent], dim=-1))
        return sixd_to_matrix(out.view(-1, self.num_joints, 6))

    @torch.no_grad()
    def set_latent_statistics(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        """Fit the subject's latent Gaussian from the prior's posteriors of its N frames (N, D).

        Moment-matches the aggregate posterior (the mixture of the frames' N(mean_i, var_i)):
        covariance = Cov(mean_i) + average var_i. The second term matters: a subject standing
        still has an almost singular Cov(mean_i), and without it a pose a few degrees off would
        score as far out; the prior's own posterior spread is the resolution of its latent space
        (and ~1 on the latent dimensions the prior leaves unused, which thus barely count).
        Then calibrates the score so that the subject's own frames have a root-mean-square of 1.
        """
        mean, var = mean.double(), logvar.double().exp()
        centre = mean.mean(0)
        spread = mean - centre
        cov = spread.T @ spread / max(len(mean) - 1, 1) + torch.diag(var.mean(0))
        precision = torch.linalg.inv(cov + 1e-6 * torch.eye(self.latent_dim, dtype=cov.dtype, device=cov.device))
        squared = torch.einsum("bi,ij,bj->b", spread, precision, spread)
        self.latent_mean.copy_(centre.to(self.latent_mean))
        self.latent_precision.copy_(precision.to(self.latent_precision))
        self.ood_scale.copy_(squared.mean().clamp_min(1e-12).to(self.ood_scale))

    def ood_score(self, latent: torch.Tensor) -> torch.Tensor:
        """Out-of-distribution score of prior latents (B, D) -> (B,).

        The Mahalanobis distance to the subject's latent Gaussian, in units of the subject's
        own root-mean-square distance: about 1 (or below) for poses like the subject's training
        poses, k for poses k times as far out as a typical one.
        """
        offset = latent - self.latent_mean
        squared = torch.einsum("bi,ij,bj->b", offset, self.latent_precision, offset)
        return (squared.clamp_min(0) / self.ood_scale).sqrt()
