"""The Hugging Face Hub base of every ram-avatar model class: safetensors only, strict loading."""

from __future__ import annotations

from huggingface_hub import PyTorchModelHubMixin


class HubModel(PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` that never unpickles and never loads a partial state.

    The stock mixin falls back to ``torch.load`` on ``pytorch_model.bin`` when a repository has
    no ``model.safetensors``, and loads with ``strict=False``; a ram-avatar model refuses the
    first and always loads strictly, so a config / weights mismatch is an error, not a silently
    half-random model.
    """

    @classmethod
    def _load_as_pickle(cls, model, model_file: str, map_location: str, strict: bool):  # noqa: ANN001, ANN206
        raise ValueError(
            f"{model_file} is a pickled checkpoint; ram-avatar loads model.safetensors only. "
            "Convert it with safetensors on a trusted machine, or use a repository that ships safetensors."
        )

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):  # noqa: ANN001, ANN206
        return super()._load_as_safetensor(model, model_file, map_location, strict=True)
