"""Motion Distribution Align at run time (paper section 3.3).

Each driving frame's body pose is encoded by the pose prior and decoded by the subject's
conditional decoder, conditioned on the latent of the previously aligned pose (or, with
``former="driving"``, of the previous driving pose), which gives a pose the subject could have
made. Root orientation, translation, hands, jaw and eyes are kept as driven.

Only frames far out of the subject's distribution are changed: each frame's weight is 0 up to
the OOD score ``OOD_RANGE[0]`` and rises linearly to ``strength`` at ``OOD_RANGE[1]`` and
beyond; every joint is blended (slerp) from the driving to the decoded rotation by that weight.
A uniform blend (``ood_range=None``, the paper's) erased gestures: the decoder answers any pose
the subject never made (one hand raised to wave, for a subject who only ever raised both) with
the nearest pose it knows (arms down); on the bundled example it halved the wave's 5 cm lift of
the wrist above the shoulder at strength 0.25 and put the wrist 6 cm below the shoulder at 1.
With the range, everyday motion there (the wave, the dab, jumping: scores 2-4.5) plays (nearly)
as driven, while the frames of a zombie walk scoring up to 5.6 come down to 4.3 at the default
strength (benchmarks/wave_fidelity.py).

The per-frame out-of-distribution score is the Mahalanobis distance, in the prior's latent
space, to the Gaussian of the subject's training latents, in units of the training frames'
root-mean-square distance (:meth:`SubjectPoseDecoder.ood_score`): about 1 for poses like the
subject's, k for poses k times as far out. Chosen over a kNN distance because it is cheap at
run time (a 32x32 matrix in the decoder file rather than every training latent), smooth, and
calibrated on the subject's own frames; its limit is that it sees the subject's poses as one
ellipsoid, so a pose between two clusters of a bimodal subject reads as closer than it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.models.pose_decoder import SubjectPoseDecoder, fingerprint
from ram_avatar.models.pose_vae import PoseVAE
from ram_avatar.rotations import angle_between_aa, matrix_to_aa, slerp_aa

# OOD scores between which a frame's weight rises from 0 to ``strength`` (see the module docstring).
OOD_RANGE = (4.0, 6.0)


@dataclass
class AlignResult:
    """What :func:`align` did, frame by frame (T frames)."""

    pose: SmplxPose  # the aligned motion; only body_pose differs from the driving motion
    ood_before: torch.Tensor  # (T,) OOD score of the driving body poses (~1 = like the subject)
    ood_after: torch.Tensor  # (T,) OOD score of the aligned body poses
    change_deg: torch.Tensor  # (T,) mean per-joint rotation change, degrees
    former_latent: torch.Tensor  # (1, D) latent of the last aligned pose: pass to the next call


def check_pair(prior: PoseVAE, decoder: SubjectPoseDecoder) -> None:
    """Raise ``ValueError`` unless ``decoder`` was trained against exactly this ``prior``."""
    if decoder.prior_fingerprint and decoder.prior_fingerprint != fingerprint(prior):
        where = f" ({decoder.prior})" if decoder.prior else ""
        raise ValueError(
            f"this subject decoder was trained against another pose prior{where}, fingerprint "
            f"{decoder.prior_fingerprint}, not {fingerprint(prior)}; pass the prior it was trained with"
        )


def frame_weights(
    ood: torch.Tensor, strength: float, ood_range: tuple[float, float] | None = OOD_RANGE
) -> torch.Tensor:
    """Per-frame MDA weights (T,) from OOD scores (T,): 0 up to ``ood_range[0]``, rising linearly
    to ``strength`` at ``ood_range[1]`` and beyond; ``strength`` everywhere when ``ood_range`` is None."""
    if ood_range is None:
        return torch.full_like(ood, strength)
    low, high = ood_range
    return strength * ((ood - low) / (high - low)).clamp(0.0, 1.0)


@torch.no_grad()
def align(
    driving: SmplxPose,
    prior: PoseVAE,
    decoder: SubjectPoseDecoder,
    strength: float = DEFAULT_STRENGTH,
    former: str = "aligned",
    former_latent: torch.Tensor | None = None,
    check: bool = True,
    ood_range: tuple[float, float] | None = OOD_RANGE,
) -> AlignResult:
    """Pull a driving motion toward the subject's pose distribution.

    Args:
        driving: T frames of SMPL-X-layout poses, in order, at about ``decoder.fps``.
        prior: the pose prior the decoder was trained against (checked by fingerprint).
        decoder: the subject's :class:`SubjectPoseDecoder`.
        strength: 0 = off (the driving motion, bit for bit); else the weight of the decoder's
            pose in the frames scoring ``ood_range[1]`` or more (per-joint slerp from the driving
            to the decoded rotation), less in frames scoring less, none at ``ood_range[0]`` or below.
        former: which former pose conditions the decoder: ``"aligned"`` (default, the paper's
            reading: the previously aligned pose, frame by frame) or ``"driving"`` (the previous
            driving pose: all frames at once, and in our mocap benchmark it keeps more of the
            motion's rhythm; see benchmarks/mda_eval.py).
        former_latent: (1, D) latent of the former pose of the first frame, to continue a stream
            chunk by chunk (``AlignResult.former_latent`` of the previous call); default: the
            first frame's own latent.
        check: check that ``decoder`` was trained against ``prior`` (hashes the prior's
            weights, ~2 ms; a caller that already checked the pair, e.g. per chunk of a stream,
            passes False).
        ood_range: the OOD scores between which a frame's weight rises from 0 to ``strength``;
            None: every frame gets ``strength`` (the paper's uniform blend).
    """
    if former not in ("aligned", "driving"):
        raise ValueError(f"former must be 'aligned' or 'driving', got {former!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be within [0, 1] (0 = off, 1 = full), got {strength}")
    if ood_range is not None and not 0.0 <= ood_range[0] < ood_range[1]:
        raise ValueError(f"ood_range must be two OOD scores, 0 <= low < high, got {ood_range}")
    if check:
        check_pair(prior, decoder)
    prior, decoder = prior.eval(), decoder.eval()
    device = next(prior.parameters()).device
    body = driving.body_pose.to(device=device, dtype=torch.float32)
    latents = prior.encode(body)[0]  # (T, D) posterior means
    ood_before = decoder.ood_score(latents)
    if strength == 0.0:
        return AlignResult(driving, ood_before, ood_before.clone(), torch.zeros_like(ood_before), latents[-1:])

    first = latents[:1] if former_latent is None else former_latent.to(latents)
    if former == "driving":
        aligned = matrix_to_aa(decoder(latents, torch.cat([first, latents[:-1]])))
        last = latents[-1:]
    else:
        # Conditioned on its own previous output (full strength), not on the blend: the decoder
        # was trained on the subject's consecutive poses, which its own output resembles.
        last, decoded = first, []
        for t in range(len(latents)):
            rotations = decoder(latents[t : t + 1], last)  # (1, 21, 3, 3)
            last = prior.encode_rotations(rotations)[0]
            decoded.append(rotations)
        aligned = matrix_to_aa(torch.cat(decoded))  # (T, 21, 3)
    weight = frame_weights(ood_before, strength, ood_range)[:, None]  # (T, 1)
    aligned = torch.where(weight[..., None] > 0, slerp_aa(body, aligned, weight), body)  # frames left alone stay exact
    ood_after = decoder.ood_score(prior.encode(aligned)[0])
    change = angle_between_aa(body, aligned).mean(-1)
    pose = replace(driving, body_pose=aligned.to(driving.body_pose))
    return AlignResult(pose, ood_before, ood_after, change, last)
