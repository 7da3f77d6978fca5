"""MDA's run-time loaders: the pose prior and a subject's pose decoder, from a folder or Hub id.

Kept apart from :mod:`ram_avatar.mda.train` so that driving an avatar imports no training code
(``accelerate``, the training loops).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ram_avatar.models.pose_decoder import SubjectPoseDecoder
from ram_avatar.models.pose_vae import PoseVAE


def load_prior(prior: PoseVAE | str | os.PathLike) -> PoseVAE:
    """A :class:`PoseVAE`, passed through or loaded from a folder / Hub id, in eval mode."""
    if isinstance(prior, PoseVAE):
        return prior.eval()
    return _from_pretrained(PoseVAE, prior, "pose prior", "ram-avatar motion-prior train").eval()


def load_decoder(decoder: SubjectPoseDecoder | str | os.PathLike) -> SubjectPoseDecoder:
    """A :class:`SubjectPoseDecoder`, passed through or loaded from a folder / Hub id, in eval mode."""
    if isinstance(decoder, SubjectPoseDecoder):
        return decoder.eval()
    return _from_pretrained(SubjectPoseDecoder, decoder, "subject decoder", "ram-avatar align train").eval()


def _from_pretrained(cls: type, source: str | os.PathLike, what: str, how: str) -> nn.Module:
    """``cls.from_pretrained(source)`` with a user-facing error when there is nothing to load."""
    path = Path(source)
    if path.is_dir() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no {what} (no config.json); train one with `{how}`")
    try:
        return cls.from_pretrained(str(source))
    except (OSError, ValueError) as error:  # hub errors (not found, offline, bad id) derive from these
        if path.is_dir():
            raise
        raise FileNotFoundError(
            f"no {what} at {source}: not a folder here and not loadable from the Hub ({error})"
        ) from error
