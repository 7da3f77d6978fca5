"""Evaluating avatars: held-out metrics, comparison pictures, OOD driving (``ram-avatar eval``)."""

from ram_avatar.lazy import lazy_exports

_EVALUATE = "ram_avatar.evaluation.evaluate"
__all__ = ["EvalResult", "evaluate_avatar", "temporal_stability"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, _EVALUATE))
