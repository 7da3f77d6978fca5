"""Training an avatar on a subject dataset (paper section 3.4): data, objectives, loop, card.

``train(subject_dir, out_dir, TrainConfig(...))`` or ``ram-avatar train SUBJECT_DIR OUT_DIR``;
``accelerate launch -m ram_avatar.training.train_avatar`` for several GPUs.
"""

from ram_avatar.lazy import lazy_exports

# Resolved on first use: keeps ``ram-avatar --help`` free of torch, and lets
# ``python -m ram_avatar.training.train_avatar`` run without this package having imported it
# already (runpy warns about that).
_CARD, _DATA, _TRAIN = "ram_avatar.training.card", "ram_avatar.training.data", "ram_avatar.training.train_avatar"
__all__ = [
    "StepBatchSampler",
    "TrainConfig",
    "Trainer",
    "TripletDataset",
    "avatar_card",
    "build_map_cache",
    "push_avatar",
    "save_avatar",
    "train",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "avatar_card": _CARD,
        "push_avatar": _CARD,
        "save_avatar": _CARD,
        "StepBatchSampler": _DATA,
        "TripletDataset": _DATA,
        "build_map_cache": _DATA,
        "TrainConfig": _TRAIN,
        "Trainer": _TRAIN,
        "train": _TRAIN,
    },
)
