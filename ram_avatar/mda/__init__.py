"""Motion Distribution Align (paper section 3.3): a body pose prior, the subject's conditional
decoder, and the run-time alignment of driving motion toward the subject's own poses.

    from ram_avatar.mda import train_prior, train_subject_decoder, align
    prior = train_prior(["mocap/"], "out/prior", steps=20_000).model
    decoder = train_subject_decoder("subjects/me", prior, "out/me-align").model
    result = align(driving_pose, prior, decoder)  # .pose, .ood_before, .ood_after
    prior, decoder = load_prior("out/prior"), load_decoder("out/me-align")   # saved ones (mda.load)

The names are imported on first use, so that ``ram_avatar.mda.cli`` (loaded by every
``ram-avatar`` call) stays free of torch.
"""

from __future__ import annotations

from ram_avatar.lazy import lazy_exports

# MDA strength of the command line, the pipeline, the live session and the app: the weight of the
# subject decoder's pose in frames far out of the subject's distribution (``align.OOD_RANGE``).
# benchmarks/wave_fidelity.py on the example avatar: the strongest that keeps every bundled and
# shared mocap motion's rhythm (joint-speed correlation >= 0.95; 0.75 dropped a zombie walk to
# 0.89, 1 to 0.81), while the frames scoring up to 5.6 still come down to 4.3 at most.
DEFAULT_STRENGTH = 0.5

__getattr__ = lazy_exports(
    __name__,
    {
        "align": "ram_avatar.mda.align",
        "AlignResult": "ram_avatar.mda.align",
        "mirror_pose": "ram_avatar.mda.augment",
        "mirror_body_pose": "ram_avatar.mda.augment",
        "load_decoder": "ram_avatar.mda.load",
        "load_prior": "ram_avatar.mda.load",
        "train_prior": "ram_avatar.mda.train",
        "train_subject_decoder": "ram_avatar.mda.train",
        "TrainResult": "ram_avatar.mda.train",
    },
)


__all__ = [
    "DEFAULT_STRENGTH",
    "AlignResult",
    "TrainResult",
    "align",
    "load_decoder",
    "load_prior",
    "mirror_body_pose",
    "mirror_pose",
    "train_prior",
    "train_subject_decoder",
]
