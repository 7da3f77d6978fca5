"""The Hugging Face Hub base of every ram-avatar model class: safetensors only, strict loading."""

from __future__ import annotations

import os

from huggingface_hub import PyTorchModelHubMixin, constants


class HubModel(PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` that never unpickles and never loads a partial state.

    The stock mixin falls back to ``torch.load`` on ``pytorch_model.bin`` when a repository has
    no ``model.safetensors``, and loads with ``strict=False``; a ram-avatar model refuses the
    first and always loads strictly, so a config / weights mismatch is an error, not a silently
    half-random model. It also prints "Loading weights from local directory" on every load
    from a folder; a ram-avatar model loads a folder silently.
    """

    @classmethod
    def _from_pretrained(  # noqa: ANN206
        cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool, local_files_only: bool,  # noqa: ANN001
        token: str | bool | None, map_location: str = "cpu", strict: bool = False, **model_kwargs,  # noqa: ANN003
    ):
        if not os.path.isdir(model_id):  # a Hub id: the stock download, then the loaders below
            return super()._from_pretrained(
                model_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token, map_location=map_location, strict=strict, **model_kwargs,
            )  # fmt: skip
        model_file = os.path.join(model_id, constants.SAFETENSORS_SINGLE_FILE)
        if not os.path.isfile(model_file):
            raise FileNotFoundError(f"{model_file} is missing: a ram-avatar model folder holds config.json and {constants.SAFETENSORS_SINGLE_FILE}")
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
