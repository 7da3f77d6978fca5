"""The one renderer of an avatar's frames of its subject beside their ground truth.

Training's held-out evaluation, its previews and the card's picture
(``ram_avatar.training.train_avatar``) and ``ram-avatar eval`` (``ram_avatar.evaluation``) all
render through :func:`render_frames`, from the input maps :func:`model_map_cache` rasterizes, so
their numbers come from the same pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm


def model_map_cache(
    model: torch.nn.Module,
    subject,
    template,
    cache_root: str | os.PathLike,
    progress: bool = True,  # noqa: ANN001
) -> Path:
    """``build_map_cache`` of ``subject`` with the input-map settings ``model`` reads."""
    from ram_avatar.training.data import build_map_cache

    return build_map_cache(
        subject,
        template,
        cache_root,
        expand_distance=getattr(model, "expand_distance", 0.03),
        attention_downsample=getattr(model, "attention_downsample", 4),
        expanded=getattr(model, "uses_expanded", False),
        progress=progress,
    )


@torch.no_grad()
def render_frames(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    device: torch.device,
    background: float,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render every item of ``dataset`` (a ``TripletDataset`` or a ``Subset`` of one): (pred, gt,
    mask) on the CPU, (N, 3|1, H, W); prediction and ground truth composited on the grey level
    ``background``, the prediction clamped to [0, 1]."""
    from ram_avatar.training.objectives import composite

    preds, gts, masks = [], [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    for batch in tqdm(loader, desc="held-out frames", unit="batch", disable=not progress, leave=False):
        out = model({key: value.to(device) for key, value in batch["maps"].items()})
        preds.append(composite(out["rgb"], out["alpha"], background).float().clamp(0, 1).cpu())
        gts.append(composite(batch["image"], batch["mask"], background))
        masks.append(batch["mask"])
    return torch.cat(preds), torch.cat(gts), torch.cat(masks)
