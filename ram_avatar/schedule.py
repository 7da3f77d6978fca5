"""The learning-rate schedule of every training loop: a linear warm-up, then a cosine decay.

Avatar training (``ram_avatar.training.train_avatar``, through ``LambdaLR``) and MDA's pose prior
and subject decoder (``ram_avatar.mda.train``) all scale their base rate by :func:`cosine_factor`.
"""

from __future__ import annotations

import math


def cosine_factor(step: int, total: int, warmup: int, final_ratio: float, time_progress: float = 0.0) -> float:
    """The learning rate of ``step`` (counted from 0) as a fraction of the peak: ``(step + 1) /
    warmup`` during the ``warmup`` steps, then a cosine from 1 down to ``final_ratio`` at ``total``
    steps, or at ``time_progress`` 1 (the fraction of a time budget spent) if that comes first."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(max((step - warmup) / max(total - warmup, 1), time_progress), 1.0)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
