"""Where tensors live (chosen at run time, never hard-coded), and how the process uses the CPU's memory.

torch is imported inside the functions that use it: the command line calls
:func:`keep_freed_memory` before every command, and some (``ram-avatar info``) need no torch,
whose import takes seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def default_device() -> torch.device:
    """``$RAM_AVATAR_DEVICE`` if set (e.g. ``cpu``, ``cuda:1``), else CUDA when present, else the CPU."""
    import torch

    name = os.environ.get("RAM_AVATAR_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str) -> str:
    """The GPU's or the CPU's model name (for benchmark reports)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


_split = {"lock": threading.Lock(), "users": 0, "threads": 0}


@contextlib.contextmanager
def split_threads(parts: int) -> Iterator[None]:
    """PyTorch's CPU threads divided among ``parts`` threads of one's own for the duration (each
    thread's ops then run on ``torch.get_num_threads() // parts``; a thread takes the setting up
    on its first op). Nested or concurrent uses share the first one's split; the last to leave
    restores the setting."""
    import torch

    with _split["lock"]:
        if _split["users"] == 0:
            _split["threads"] = torch.get_num_threads()
            torch.set_num_threads(max(1, _split["threads"] // parts))
        _split["users"] += 1
    try:
        yield
    finally:
        with _split["lock"]:
            _split["users"] -= 1
            if _split["users"] == 0:
                torch.set_num_threads(_split["threads"])


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse rather than give it back to the system at once.

    Rendering makes the same multi-megabyte temporaries frame after frame. By default glibc maps
    large blocks fresh and returns them when freed, so every reuse faults its pages back in:
    measured streaming the example avatar on 2 cores, ~5% of the time in the kernel and up to
    300 page faults a frame; with this, under 1% and none (peak memory unchanged). All threads
    share one arena: a stream's worker threads would otherwise get arenas of their own, whose
    heaps cannot hold blocks over 64 MB (mapped fresh every chunk: ~600 page faults a frame).
    Called by the command line, the app and the benchmarks (applications), not on import.
    Returns whether it applied (Linux with glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (e.g. musl): leave it be
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_ARENA_MAX, 1))
    return all(mallopt(option, value) for option, value in settings)
