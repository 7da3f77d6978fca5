"""Where tensors live: chosen at run time, never hard-coded."""

from __future__ import annotations

import os
import platform

import torch


def default_device() -> torch.device:
    """``$RAM_AVATAR_DEVICE`` if set (e.g. ``cpu``, ``cuda:1``), else CUDA when present, else the CPU."""
    name = os.environ.get("RAM_AVATAR_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str) -> str:
    """The GPU's or the CPU's model name (for benchmark reports)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
