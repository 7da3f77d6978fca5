"""Where tensors live: chosen at run time, never hard-coded."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """``$RAM_AVATAR_DEVICE`` if set (e.g. ``cpu``, ``cuda:1``), else CUDA when present, else the CPU."""
    name = os.environ.get("RAM_AVATAR_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
