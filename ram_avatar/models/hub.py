"""The Hugging Face Hub base of every ram-avatar model class: safetensors only, strict loading, and
the configuration and weights checked before anything is allocated (a model folder may come from
any Hub repo)."""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from ram_avatar.limits import check_limit
from ram_avatar.pipelines.folder import AvatarFormatError, safetensors_header

# Sane (min, max) of every numeric ``__init__`` argument of the ram-avatar model classes, by name
# (for a list such as ``widths``: of each value). Far above the named configs (paper-1024: widths
# up to 512, a 1024^2 texture), far below what breaks: sizes are bounded again, together, by the
# memory estimate (limit ``avatar_memory_gb``).
CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "texture_size": (1, 16384),
    "texture_channels": (1, 4096),
    "texture_levels": (1, 14),
    "attention_hidden": (1, 4096),
    "attention_downsample": (1, 1024),
    "attention_recurrence": (1, 16),
    "distance_power": (0.0, 16.0),
    "expand_distance": (0.0, 1.0),
    "face_code_channels": (1, 4096),
    "map_hidden": (1, 4096),
    "map_channels": (1, 4096),
    "hand_line_sigma": (1e-6, 1.0),
    "widths": (1, 4096),
    "style_dim": (1, 4096),
    "n_mlp": (0, 16),
    "decoder_convs": (1, 16),
    "edge_spread": (0, 64),
    "latent_dim": (1, 4096),
    "hidden_dim": (1, 65536),
    "num_layers": (1, 64),
    "dropout": (0.0, 1.0),
    "num_joints": (1, 1024),
    "fps": (0.1, 1000.0),
    "channels": (1, 4096),
    "layers": (1, 16),
}
MAX_LIST = 10  # values in a list argument (``widths``: pyramid levels; 10 pads a frame to 1024^2 multiples)
MAX_TEXT = 1000  # characters of a text argument (``prior``: where the prior came from)


def check_config(cls: type, config: Any, label: str) -> dict[str, Any]:
    """Check a model configuration (``config.json``, named ``label`` in errors) against the
    ``__init__`` of ``cls``: a JSON object whose known keys have the defaults' types (an int
    where the default is an int, ...) and values in :data:`CONFIG_RANGES`. Unknown keys are
    ignored, as ``from_pretrained`` ignores them. Returns the whole configuration: the
    ``__init__`` defaults with ``config``'s known keys over them."""
    if not isinstance(config, dict):
        raise AvatarFormatError(f"{label} must hold a JSON object; re-download or re-save the model")
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for key, value in config.items():
        if key not in defaults:
            continue
        low, high = CONFIG_RANGES.get(key, (-math.inf, math.inf))
        default = defaults[key]
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, str):
            ok, expected = isinstance(value, str) and len(value) <= MAX_TEXT, f"a text of at most {MAX_TEXT} characters"
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, list) and 1 <= len(value) <= MAX_LIST and all(_int_in(v, low, high) for v in value)
            expected = f"a list of 1 to {MAX_LIST} integers between {low:g} and {high:g}"
        elif isinstance(default, int):
            ok, expected = _int_in(value, low, high), f"an integer between {low:g} and {high:g}"
        else:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok, expected = number and low <= value <= high, f"a number between {low:g} and {high:g}"
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise AvatarFormatError(
                f"{label}: {key!r} must be {expected}, got {shown}; re-download or re-save the model"
            )
    return {**defaults, **{key: value for key, value in config.items() if key in defaults}}


def check_weights(cls: type, config: dict[str, Any], model_file: str | os.PathLike, label: str) -> int:
    """Check a model folder before loading it, allocating nothing: ``config`` (see
    :func:`check_config`), the safetensors header of ``model_file`` (see
    :func:`~ram_avatar.pipelines.folder.safetensors_header`), and that the header holds exactly
    the tensors, of the shapes, that ``cls(**config)`` has (built on the meta device, which has no
    memory). Returns the bytes the model's parameters and buffers will take, after checking them
    against the limit ``avatar_memory_gb``. ``label`` (e.g. ``avatar``) names the folder in errors."""
    import torch

    check_config(cls, config, f"{label}/{constants.CONFIG_NAME}")
    weights = f"{label}/{Path(model_file).name}"
    stored = safetensors_header(Path(model_file), weights)
    try:
        with torch.device("meta"):
            state = cls(**config).state_dict()
    except (ValueError, TypeError, RuntimeError) as error:
        raise AvatarFormatError(
            f"{label}/{constants.CONFIG_NAME} describes no valid {cls.__name__} ({error}); "
            "re-download or re-save the model"
        ) from None
    expected = {name: tuple(tensor.shape) for name, tensor in state.items()}
    for name in sorted(expected.keys() | stored.keys()):
        if expected.get(name) != (stored[name][1] if name in stored else None):
            found = f"holds {list(stored[name][1])}" if name in stored else "lacks it"
            wanted = f"a {list(expected[name])} tensor {name!r}" if name in expected else f"no tensor {name!r}"
            raise AvatarFormatError(
                f"{weights} does not match {label}/{constants.CONFIG_NAME}: the config describes {wanted}, "
                f"the file {found}; the two come from different models: re-download or re-save the model"
            )
    size = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    check_limit("avatar_memory_gb", size / 2**30, f"{label} ({cls.__name__} parameters alone), in GB")
    return size


def _int_in(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class HubModel(PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` that never unpickles, never loads a partial state, and checks a
    model's files before it allocates it.

    The stock mixin falls back to ``torch.load`` on ``pytorch_model.bin`` when a repository has
    no ``model.safetensors``, and loads with ``strict=False``; a ram-avatar model refuses the
    first and always loads strictly, so a config / weights mismatch is an error, not a silently
    half-random model. It also prints "Loading weights from local directory" on every load
    from a folder; a ram-avatar model loads a folder silently. Before the model is built,
    :func:`check_weights` checks ``config.json`` and the weights' header against each other and
    the memory limit: a damaged file or a config asking for 10^6 channels is a one-line error.
    """

    @classmethod
    def _from_pretrained(  # noqa: ANN206
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir,
        force_download: bool,
        local_files_only: bool,  # noqa: ANN001
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = False,
        **model_kwargs,  # noqa: ANN003
    ):
        if os.path.isdir(model_id):
            model_file = os.path.join(model_id, constants.SAFETENSORS_SINGLE_FILE)
            if not os.path.isfile(model_file):
                raise FileNotFoundError(
                    f"{model_file} is missing: a ram-avatar model folder holds config.json and "
                    f"{constants.SAFETENSORS_SINGLE_FILE}"
                )
            label = Path(model_id).resolve().name
        else:  # a Hub id: download the weights only (the stock loader would build the model first)
            try:
                model_file = hf_hub_download(
                    repo_id=model_id,
                    filename=constants.SAFETENSORS_SINGLE_FILE,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            except EntryNotFoundError:
                raise FileNotFoundError(
                    f"{model_id} has no {constants.SAFETENSORS_SINGLE_FILE}; ram-avatar loads safetensors only, never "
                    "pickled checkpoints: use a repository that ships safetensors"
                ) from None
            label = model_id
        check_weights(cls, model_kwargs, model_file, label)
        return cls._load_as_safetensor(cls(**model_kwargs), model_file, map_location, strict)

    @classmethod
    def _load_as_pickle(cls, model, model_file: str, map_location: str, strict: bool):  # noqa: ANN001, ANN206
        raise ValueError(
            f"{model_file} is a pickled checkpoint; ram-avatar loads model.safetensors only. "
            "Convert it with safetensors on a trusted machine, or use a repository that ships safetensors."
        )

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):  # noqa: ANN001, ANN206
        return super()._load_as_safetensor(model, model_file, map_location, strict=True)
