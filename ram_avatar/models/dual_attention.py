"""Dual (spatial + temporal) criss-cross attention over body feature maps (paper section 3.2).

Criss-cross attention (CCNet, Huang et al. 2019): every pixel i attends to the H + W - 1 pixels u
in its own row and column. RAM-Avatar's version takes the queries from one map and the keys /
values from another, and scales each attention logit by a weight that decays with the pixel
distance between i and u along that row or column (the paper's d(i, u), as its code:
``d = 1 / (1 + |i - u|^0.8)``, distances in pixels of the attention map):

    A(i, u) = softmax_u( d(i, u) * <Q_i, K_u> ),    out_i = sum_u A(i, u) V_u

Applied twice with shared weights and a residual (the second pass sees what the first gathered
from other rows and columns, so each pixel is reached from the whole map). Spatial attention
takes the queries from the expanded body (the posed mesh pushed out along its normals: it covers
loose clothing and hair around the body), temporal attention from the previous frame's body map.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ram_avatar.models.layers import ConvAct, upsample_to


def attention_size(height: int, width: int, downsample: int) -> tuple[int, int]:
    """(h, w) of the attention maps for a (height, width) frame: ``round(size / downsample)``, >= 1."""
    return max(1, round(height / downsample)), max(1, round(width / downsample))


def distance_weight(size: int, power: float, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) d(i, u) = 1 / (1 + |i - u|^power) between positions along one row / column."""
    position = torch.arange(size, dtype=torch.float32, device=device)
    return 1 / (1 + (position[:, None] - position[None, :]).abs() ** power)


@functools.lru_cache(maxsize=32)
def _weights(size: int, power: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """d(i, u) for ``size``, and a (size, size) bias that is -inf on the diagonal, 0 elsewhere."""
    weight = distance_weight(size, power, device)
    return weight, torch.zeros_like(weight).fill_diagonal_(float("-inf"))


def criss_cross(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, distance_power: float = 0.8
) -> torch.Tensor:
    """Distance-weighted criss-cross attention.

    Args:
        query, key: (B, Cq, h, w); value: (B, C, h, w).
        distance_power: exponent of d(i, u) (the paper: 0.8).
    Returns:
        (B, C, h, w): for each pixel, the attention-weighted sum of the values in its row and
        column (itself counted once).
    """
    pixel_major = [x.permute(0, 2, 3, 1) for x in (query, key, value)]
    return _criss_cross(*pixel_major, distance_power).permute(0, 3, 1, 2)


def _criss_cross(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, distance_power: float) -> torch.Tensor:
    """``criss_cross`` on pixel-major maps: (B, h, w, Cq), (B, h, w, Cq), (B, h, w, C) -> (B, h, w, C).

    Pixel-major keeps every product a plain batched matmul: over rows as laid out, over columns
    after swapping h and w.
    """
    h, w = query.shape[1:3]
    row_weight, _ = _weights(w, distance_power, query.device)
    column_weight, not_self = _weights(h, distance_power, query.device)
    # Logits within each row: (B, y, x, z) for u = (y, z); within each column: (B, x, y, z) for
    # u = (z, x). The pixel itself lies on both its row and its column: it counts in the row only.
    row = (query @ key.transpose(-1, -2)) * row_weight.to(query.dtype)
    column = torch.addcmul(
        not_self.to(query.dtype), query.transpose(1, 2) @ key.permute(0, 2, 3, 1), column_weight.to(query.dtype)
    )
    # One softmax over the row and the column together (without concatenating them).
    top = torch.maximum(row.amax(-1), column.amax(-1).transpose(1, 2))  # (B, h, w)
    row = (row - top[..., None]).exp_()
    column = (column - top.transpose(1, 2)[..., None]).exp_()
    total = row.sum(-1) + column.sum(-1).transpose(1, 2)  # (B, h, w)
    out = row @ value + (column @ value.transpose(1, 2)).transpose(1, 2)
    return out / total[..., None]


class CrissCrossAttention(nn.Module):
    """Queries from one map, keys / values from another; ``recurrence`` passes with a residual."""

    def __init__(self, channels: int, query_channels: int, recurrence: int = 2, distance_power: float = 0.8):
        super().__init__()
        # 1x1 convs, as linear maps over pixel-major maps.
        self.query = nn.Linear(channels, query_channels)
        self.key_value = nn.Linear(channels, query_channels + channels)  # one product for both
        self.query_channels = query_channels
        self.recurrence = recurrence
        self.distance_power = distance_power

    def forward(self, x: torch.Tensor, query_source: torch.Tensor) -> torch.Tensor:
        """x (keys / values, the residual path), query_source: (B, C, h, w) -> (B, C, h, w)."""
        query = self.query(query_source.permute(0, 2, 3, 1))  # the query map does not change between passes
        x = x.permute(0, 2, 3, 1)
        for _ in range(self.recurrence):
            key, value = self.key_value(x).split([self.query_channels, x.shape[-1]], dim=-1)
            x = x + _criss_cross(query, key, value, self.distance_power)
        return x.permute(0, 3, 1, 2)


class DualAttention(nn.Module):
    """The attention term of the body feature map F_body (paper eq. for F_body).

    All three maps are first brought to the attention size by the caller (area-downsampled,
    see ``RamAvatar``) and encoded by one shared 3x3 conv; spatial and temporal criss-cross
    attention each end in their own conv, and the two results are summed and upsampled:

        F_att = up(conv_s(CCA_s(E(F_cur), query=E(F_exp)))) + up(conv_t(CCA_t(E(F_cur), query=E(F_prev))))

    ``RamAvatar`` adds F_att to the full-resolution F_cur (keeping the texture's full detail).
    Either branch can be switched off (ablation); at least one must stay.
    """

    def __init__(
        self,
        channels: int = 48,
        hidden: int = 96,
        query_channels: int | None = None,
        recurrence: int = 2,
        distance_power: float = 0.8,
        spatial: bool = True,
        temporal: bool = True,
    ):
        super().__init__()
        if not (spatial or temporal):
            raise ValueError("DualAttention needs the spatial or the temporal branch (or both)")
        query_channels = query_channels or max(1, hidden // 8)  # CCNet's C/8
        self.encode = ConvAct(channels, hidden)
        branch = lambda: CrissCrossAttention(hidden, query_channels, recurrence, distance_power)  # noqa: E731
        self.spatial = branch() if spatial else None
        self.temporal = branch() if temporal else None
        self.spatial_out = nn.Conv2d(hidden, channels, 3, padding=1) if spatial else None
        self.temporal_out = nn.Conv2d(hidden, channels, 3, padding=1) if temporal else None
        # The attention term starts at zero, so that F_body starts as the texture's F_cur and
        # the (initially random) attention cannot blur it while the renderer is still learning.
        for out in (self.spatial_out, self.temporal_out):
            if out is not None:
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)

    def forward(
        self,
        current: torch.Tensor,
        expanded: torch.Tensor | None,
        previous: torch.Tensor | None,
        size: tuple[int, int],
    ) -> torch.Tensor:
        """The attention term.

        Args:
            current: (B, C, h, w) the posed body's features at the attention size.
            expanded: (B, C, h, w) the expanded body's (needed when ``spatial``).
            previous: (B, C, h, w) the previous frame's (needed when ``temporal``).
            size: (H, W) of the output.
        Returns:
            (B, C, H, W): ``low_res`` bilinearly upsampled to ``size``.
        """
        return upsample_to(
            self.low_res(current, expanded, previous).contiguous(memory_format=torch.channels_last), size
        )

    def low_res(
        self, current: torch.Tensor, expanded: torch.Tensor | None, previous: torch.Tensor | None
    ) -> torch.Tensor:
        """The attention term at the attention size, before upsampling: (B, C, h, w)."""
        keys = self.encode(current)
        out = 0
        if self.spatial is not None:
            if expanded is None:
                raise ValueError("spatial attention needs the expanded body's features")
            out = out + self.spatial_out(self.spatial(keys, self.encode(expanded)))
        if self.temporal is not None:
            if previous is None:
                raise ValueError("temporal attention needs the previous frame's features")
            out = out + self.temporal_out(self.temporal(keys, self.encode(previous)))
        return out
