"""Training of the pose prior and of a subject's conditional decoder, with ``accelerate``.

Both loops run unchanged on a CPU, one GPU or several (``accelerate launch``): data sits in
memory on the device, each process draws its own random batches, and every step re-seeds
torch from (seed, step, process), so a resumed run draws exactly the batches, noise and dropout
an uninterrupted one would. Checkpoints (``OUT/checkpoint``: ``accelerate`` state plus
``trainer_state.json``) are written to a temporary folder and renamed into place, so a crash
never leaves a half-written one; the finished model is written with ``save_pretrained``
(config.json + model.safetensors, the weights renamed into place last) and its numbers to
``OUT/metrics.json``. The learning rate follows :func:`ram_avatar.schedule.cosine_factor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from ram_avatar.atomic import remove_shared_partials, replace_folder, shared_partial, staged_file, staged_files
from ram_avatar.body.layout import SmplxPose
from ram_avatar.device import default_device
from ram_avatar.mda.augment import jitter, mirror_body_pose
from ram_avatar.mda.load import load_prior
from ram_avatar.mda.losses import (
    hinge_limit_loss,
    kl_loss,
    position_loss,
    rotation_loss,
)
from ram_avatar.models.pose_decoder import SubjectPoseDecoder, fingerprint
from ram_avatar.models.pose_vae import PoseVAE
from ram_avatar.rotations import aa_to_matrix, angle_between_aa
from ram_avatar.schedule import cosine_factor

CHECKPOINT = "checkpoint"
FINAL_LR_RATIO = 0.02  # the learning rate at the last step, as a fraction of the peak
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.json"

MotionSource = str | os.PathLike | SmplxPose


@dataclass
class TrainResult:
    """A finished training run: the model (on the CPU, in eval mode), its numbers, where it is."""

    model: nn.Module
    metrics: dict
    out_dir: Path


# ----------------------------------------------------------------------------- data


def load_body_poses(sources: Sequence[MotionSource], fps: float | None) -> list[tuple[str, torch.Tensor]]:
    """(name, axis-angle body pose (T, 21, 3)) for each motion; folders are searched for motion files.

    Files and folders are read with :mod:`ram_avatar.motion`, resampled to ``fps``;
    :class:`SmplxPose` items are taken as they are (named ``motion0``, ``motion1`` ...).
    """
    named = []
    for i, source in enumerate(sources):
        if isinstance(source, SmplxPose):
            named.append((f"motion{i}", source.body_pose.detach().float().cpu()))
            continue
        from ram_avatar.motion import find_motion_files, load_motion

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist; pass motion files (BVH, AMASS / SMPL-X .npz) or folders of them"
            )
        files = find_motion_files(path) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"{path} holds no motion files (BVH, AMASS / SMPL-X .npz / .json)")
        for file in files:
            named.append((str(file), load_motion(file, fps=fps).pose.body_pose.detach().float().cpu()))
    return named


def split_frames(
    named: list[tuple[str, torch.Tensor]], holdout: Sequence[str], val_fraction: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training frames (N, 21, 3) and held-out frames by name.

    A motion whose path, file name or stem is in ``holdout`` is held out whole (the honest
    split: frames of one clip are strongly correlated); of the others the last
    ``val_fraction`` of each clip is held out as one contiguous block.
    """
    train, val = [], {}
    for name, poses in named:
        path = Path(name)
        if name in holdout or path.name in holdout or path.stem in holdout:
            val[name] = poses
            continue
        cut = len(poses) - round(len(poses) * val_fraction)
        train.append(poses[:cut])
        if cut < len(poses):
            val[f"{name} (last {len(poses) - cut} frames)"] = poses[cut:]
    missing = [h for h in holdout if not any(h in (n, Path(n).name, Path(n).stem) for n, _ in named)]
    if missing:
        raise ValueError(f"held-out motions {missing} are not among the inputs {[Path(n).name for n, _ in named]}")
    if not train or sum(len(p) for p in train) == 0:
        raise ValueError("no training frames left after holding out; hold out fewer motions")
    return torch.cat(train), val


def template_rest_joints(body_template: str = "anny") -> torch.Tensor:
    """Rest-pose positions (22, 3) of the pelvis and the 21 body joints of a body template."""
    from ram_avatar.body import load_template

    with torch.no_grad():
        return load_template(body_template)(SmplxPose.zeros(1)).joints[0, :22].float().cpu()


@torch.no_grad()
def mean_angle_error(prior: PoseVAE, body_pose: torch.Tensor, batch: int = 4096) -> float:
    """Mean per-joint geodesic error in degrees of the prior's deterministic reconstruction."""
    prior.eval()
    errors = [angle_between_aa(prior.reconstruct(chunk), chunk).mean() * len(chunk) for chunk in body_pose.split(batch)]
    return float(sum(errors) / len(body_pose))


# ----------------------------------------------------------------------------- objectives


class PriorObjective(nn.Module):
    """The prior's training loss as one module, so that DDP sees every parameter in ``forward``.

    loss = rotation + kl_weight KL + limit_weight hinge(reconstruction and prior samples)
           + position_weight joint-position error (if rest joints are given)
    The hinge term on decoded N(0, I) samples keeps the parts of latent space no training pose
    reaches from producing backward knees and elbows.
    """

    def __init__(
        self,
        model: PoseVAE,
        kl_weight: float,
        limit_weight: float,
        position_weight: float,
        rest_joints: torch.Tensor | None,
    ):
        super().__init__()
        self.model = model
        self.kl_weight, self.limit_weight, self.position_weight = kl_weight, limit_weight, position_weight
        self.register_buffer(
            "rest_joints", rest_joints if rest_joints is not None else torch.zeros(0), persistent=False
        )

    def forward(self, body_pose: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(body_pose, sample=True)
        target = aa_to_matrix(body_pose)
        samples = self.model.decode(torch.randn_like(out["mean"]))
        terms = {
            "rot": rotation_loss(out["matrices"], target),
            "kl": kl_loss(out["mean"], out["logvar"]),
            "limit": hinge_limit_loss(out["matrices"]) + hinge_limit_loss(samples),
        }
        loss = terms["rot"] + self.kl_weight * terms["kl"] + self.limit_weight * terms["limit"]
        if self.position_weight and self.rest_joints.numel():
            terms["pos"] = position_loss(out["matrices"], target, self.rest_joints)
            loss = loss + self.position_weight * terms["pos"]
        return {"loss": loss, **terms}


class DecoderObjective(nn.Module):
    """The subject decoder's loss: rotation (+ joint-position) error of its output."""

    def __init__(self, model: SubjectPoseDecoder, position_weight: float, rest_joints: torch.Tensor | None):
        super().__init__()
        self.model = model
        self.position_weight = position_weight
        self.register_buffer(
            "rest_joints", rest_joints if rest_joints is not None else torch.zeros(0), persistent=False
        )

    def forward(self, latent: torch.Tensor, former: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        predicted = self.model(latent, former)
        terms = {"rot": rotation_loss(predicted, target)}
        loss = terms["rot"]
        if self.position_weight and self.rest_joints.numel():
            terms["pos"] = position_loss(predicted, target, self.rest_joints)
            loss = loss + self.position_weight * terms["pos"]
        return {"loss": loss, **terms}


# ----------------------------------------------------------------------------- loop + checkpoints


def _save_checkpoint(accelerator: Accelerator, out_dir: Path, state: dict) -> None:
    """accelerate state + trainer_state.json into a hidden folder that every process names alike,
    then put in place by :func:`~ram_avatar.atomic.replace_folder` (old or new, never half)."""
    staging = shared_partial(out_dir / CHECKPOINT, state["step"])
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        replace_folder(staging, out_dir / CHECKPOINT)
    accelerator.wait_for_everyone()


def _find_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint folder, if one was saved."""
    return out_dir / CHECKPOINT if (out_dir / CHECKPOINT / STATE_FILE).exists() else None


def _resume_state(out_dir: Path, resume: bool) -> dict | None:
    """The saved trainer state to resume from (None: start), after removing what a run killed while
    saving left (before this run saves anything)."""
    remove_shared_partials(out_dir / CHECKPOINT)
    checkpoint = _find_checkpoint(out_dir)
    if checkpoint is not None and not resume:
        raise FileExistsError(
            f"{out_dir} already holds a training checkpoint; pass --resume (resume=True) to continue it, or choose "
            "another output folder"
        )
    return None if checkpoint is None else json.loads((checkpoint / STATE_FILE).read_text())


def _accelerator() -> Accelerator:
    return Accelerator(cpu=default_device().type == "cpu")


def _write_atomic(path: Path, text: str) -> None:
    with staged_file(path) as tmp:  # the umask's mode, as every output (a NamedTemporaryFile's is 0600)
        tmp.write_text(text, encoding="utf-8")


def _save_model(model: nn.Module, out_dir: Path, metrics: dict) -> None:
    """save_pretrained's files renamed into ``out_dir`` (beside the checkpoint), the weights last: a
    ``model.safetensors`` there always comes with its config (``create`` reuses a decoder that has
    one); then metrics.json."""
    with staged_files(out_dir, last="model.safetensors") as staging:
        model.save_pretrained(staging)
    _write_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2))


def _loop(
    accelerator: Accelerator,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_fn: Callable[[], tuple[torch.Tensor, ...]],
    *,
    start: int,
    steps: int,
    lr: float,
    seed: int,
    out_dir: Path,
    checkpoint_every: int,
    state: dict,
    desc: str,
    progress: bool,
) -> None:
    """Optimise ``objective(*batch_fn())["loss"]`` from ``start`` to ``steps``: a warm-up over the
    first tenth (at most 100 steps), then a cosine decay to ``FINAL_LR_RATIO`` of ``lr``."""
    warmup = min(100, max(steps // 10, 1))
    objective.train()
    bar = tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc=desc,
        disable=not (progress and accelerator.is_local_main_process),
    )
    for step in bar:
        torch.manual_seed(seed + 1_000_003 * step + accelerator.process_index)
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_factor(step, steps, warmup, FINAL_LR_RATIO)
        terms = objective(*batch_fn())
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(terms["loss"])
        accelerator.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix({k: f"{v.item():.4f}" for k, v in terms.items()})
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save_checkpoint(accelerator, out_dir, {**state, "step": step + 1})
    objective.eval()


# ----------------------------------------------------------------------------- public


def train_prior(
    motions: Sequence[MotionSource],
    out_dir: str | os.PathLike,
    steps: int = 20_000,
    *,
    holdout: Sequence[str] = (),
    val_fraction: float = 0.1,
    fps: float | None = 30.0,
    batch_size: int = 256,
    lr: float = 1e-3,
    kl_weight: float = 5e-3,
    limit_weight: float = 1.0,
    position_weight: float = 1.0,
    rest_joints: torch.Tensor | None = None,
    body_template: str = "anny",
    mirror: bool = True,
    noise_degrees: float = 2.0,
    model_kwargs: dict | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train the body pose prior (:class:`PoseVAE`) on motion files and write it to ``out_dir``.

    Args:
        motions: motion files, folders of them, or :class:`SmplxPose` sequences.
        out_dir: gets config.json + model.safetensors, metrics.json and ``checkpoint/``.
        steps: total optimisation steps (a resumed run continues up to this number).
        holdout: motions (path, file name or stem) held out whole for the error report.
        val_fraction: also hold out this tail fraction of every other motion.
        fps: resample motion files to this rate (so a 120 fps clip does not count 4 times).
        kl_weight / limit_weight / position_weight: loss weights (see :class:`PriorObjective`).
        rest_joints: (22, 3) skeleton for the position term; default: ``body_template``'s.
        mirror: add left/right mirrored copies of the training poses.
        noise_degrees: std of the per-joint rotation noise added to each training batch.
        model_kwargs: :class:`PoseVAE` config (latent_dim, hidden_dim, ...).
        checkpoint_every: steps between checkpoints; resume: continue ``out_dir/checkpoint``.
    Returns:
        the trained prior and metrics: mean per-joint angle error (deg) on training and on
        held-out frames (``heldout_deg`` overall, ``heldout_by_motion``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed = _resume_state(out_dir, resume)
    if resumed is not None:
        model_kwargs = resumed["model_kwargs"]  # the checkpoint fixes the architecture
    model_kwargs = dict(model_kwargs or {})
    named = load_body_poses(motions, fps)
    train, val = split_frames(named, holdout, val_fraction)
    if mirror:
        train = torch.cat([train, mirror_body_pose(train)])
    if position_weight and rest_joints is None:
        rest_joints = template_rest_joints(body_template)

    accelerator = _accelerator()
    torch.manual_seed(seed)  # the same initial weights on every process and every run
    model = PoseVAE(**model_kwargs)
    objective = PriorObjective(model, kl_weight, limit_weight, position_weight, rest_joints)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=lr, weight_decay=1e-4)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    start = 0
    if resumed is not None:
        accelerator.load_state(str(_find_checkpoint(out_dir)))
        start = resumed["step"]
    data = train.to(accelerator.device)

    def batch() -> tuple[torch.Tensor]:
        poses = data[torch.randint(len(data), (batch_size,), device=data.device)]
        return (jitter(poses, noise_degrees) if noise_degrees else poses,)

    state = {"kind": "prior", "model_kwargs": model_kwargs, "steps": steps}
    _loop(
        accelerator,
        objective,
        optimizer,
        batch,
        start=start,
        steps=steps,
        lr=lr,
        seed=seed,
        out_dir=out_dir,
        checkpoint_every=checkpoint_every,
        state=state,
        desc="pose prior",
        progress=progress,
    )
    prior = accelerator.unwrap_model(objective).model.cpu().eval()
    real = train[: len(train) // 2] if mirror else train  # report on the real (unmirrored) poses
    metrics = {
        "steps": steps,
        "train_frames": len(real),
        "train_deg": mean_angle_error(prior, real),
        "heldout_frames": sum(len(v) for v in val.values()),
        "heldout_deg": mean_angle_error(prior, torch.cat(list(val.values()))) if val else None,
        "heldout_by_motion": {Path(k).name: mean_angle_error(prior, v) for k, v in val.items()},
    }
    if accelerator.is_main_process:
        _save_model(prior, out_dir, metrics)
    accelerator.wait_for_everyone()
    return TrainResult(prior, metrics, out_dir)


def load_subject_poses(subject: MotionSource, fps: float | None) -> tuple[torch.Tensor, float]:
    """The subject's body poses (N, 21, 3) and their frame rate.

    ``subject``: a subject dataset folder (:func:`ram_avatar.data.load_subject`), a motion file
    of the subject's own poses (resampled to ``fps`` if given), or a :class:`SmplxPose`
    (``fps`` default 30).
    """
    if isinstance(subject, SmplxPose):
        return subject.body_pose.detach().float().cpu(), float(fps or 30.0)
    path = Path(subject)
    if path.is_dir():
        from ram_avatar.data import load_subject
        from ram_avatar.data.format import META_FILE

        if not (path / META_FILE).exists():
            raise FileNotFoundError(
                f"{path} is not a subject dataset (no {META_FILE}); track a video first, or pass a motion file"
            )
        data = load_subject(path)
        return data.pose.body_pose.float().cpu(), float(data.fps)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a subject dataset folder or a motion file")
    from ram_avatar.motion import load_motion

    motion = load_motion(path, fps=fps)
    return motion.pose.body_pose.detach().float().cpu(), float(motion.fps)


def train_subject_decoder(
    subject: MotionSource,
    prior: PoseVAE | str | os.PathLike,
    out_dir: str | os.PathLike,
    steps: int = 4000,
    *,
    fps: float | None = None,
    val_fraction: float = 0.1,
    batch_size: int = 256,
    lr: float = 1e-3,
    noise_scale: float = 4.0,
    denoise_fraction: float = 0.5,
    self_former_fraction: float = 0.1,
    former_denoise_fraction: float = 0.5,
    position_weight: float = 1.0,
    rest_joints: torch.Tensor | None = None,
    body_template: str = "anny",
    model_kwargs: dict | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train a subject's :class:`SubjectPoseDecoder` against a frozen prior; write it to ``out_dir``.

    Frame t of the subject's poses is a training pair (latent of t, latent of t-1) -> pose t,
    with the latents taken from the frozen prior's encoder. The inputs are noised, the targets
    are not: a posterior sample always (the latent's own uncertainty), and for
    ``denoise_fraction`` of the current latents (``former_denoise_fraction`` of the former ones)
    also isotropic noise of std up to ``noise_scale`` (prior units, where generic motion spreads
    about 1 per dimension; foreign poses such as jumping jacks for a standing subject lie 4-5
    away, and the decoder only pulls in what its training noise reached). Learning to undo it
    is what lets the decoder map a driving latent that lies off the subject's poses back onto
    them. ``self_former_fraction`` of the pairs get the current
    latent as the former one, as the first frame of a driving clip does.

    Args:
        subject: subject dataset folder, motion file of the subject's poses, or SmplxPose.
        prior: the frozen :class:`PoseVAE` (or its folder / Hub id, recorded in the config).
        out_dir: gets config.json + model.safetensors, metrics.json and ``checkpoint/``.
        fps: resample a motion-file subject to this rate / the rate of a SmplxPose (default 30).
        val_fraction: hold out the last fraction of the frames; metrics report their mean
            per-joint change when fully aligned (every frame at strength 1; deg) and OOD scores,
            next to the training frames'.
        Others as in :func:`train_prior`.
    """
    from ram_avatar.mda.align import align

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed = _resume_state(out_dir, resume)
    prior_source = str(prior) if not isinstance(prior, PoseVAE) else ""
    prior = load_prior(prior)
    for p in prior.parameters():
        p.requires_grad_(False)
    body, fps = load_subject_poses(subject, fps)
    if len(body) < 10:
        raise ValueError(f"the subject has {len(body)} frames; the decoder needs at least 10 tracked frames")
    cut = len(body) - round(len(body) * val_fraction)
    train, val = body[:cut], body[cut:]
    with torch.no_grad():
        mean, logvar = prior.encode(train)
    if resumed is not None:
        model_kwargs = resumed["model_kwargs"]
    model_kwargs = dict(model_kwargs or {})
    config = {
        "latent_dim": prior.latent_dim,
        "num_joints": prior.num_joints,
        "fps": fps,
        **model_kwargs,
        "prior": prior_source,
        "prior_fingerprint": fingerprint(prior),
    }
    if position_weight and rest_joints is None:
        rest_joints = template_rest_joints(body_template)

    accelerator = _accelerator()
    torch.manual_seed(seed)
    model = SubjectPoseDecoder(**config)
    model.set_latent_statistics(mean, logvar)
    objective = DecoderObjective(model, position_weight, rest_joints)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=lr, weight_decay=1e-4)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    start = 0
    if resumed is not None:
        accelerator.load_state(str(_find_checkpoint(out_dir)))
        start = resumed["step"]
    device = accelerator.device
    mean, std, target = mean.to(device), (0.5 * logvar).exp().to(device), aa_to_matrix(train).to(device)

    def noised(index: torch.Tensor, fraction: float) -> torch.Tensor:
        z = mean[index] + std[index] * torch.randn_like(mean[index])
        far = (torch.rand(len(index), 1, device=device) < fraction).float()
        sigma = far * noise_scale * torch.rand(len(index), 1, device=device)
        return z + sigma * torch.randn_like(z)

    def batch() -> tuple[torch.Tensor, ...]:
        index = torch.randint(len(mean), (batch_size,), device=device)
        latent = noised(index, denoise_fraction)
        former = noised((index - 1).clamp_min(0), former_denoise_fraction)
        own = torch.rand(batch_size, 1, device=device) < self_former_fraction
        return latent, torch.where(own, latent, former), target[index]

    state = {"kind": "subject_decoder", "model_kwargs": model_kwargs, "steps": steps}
    _loop(
        accelerator,
        objective,
        optimizer,
        batch,
        start=start,
        steps=steps,
        lr=lr,
        seed=seed,
        out_dir=out_dir,
        checkpoint_every=checkpoint_every,
        state=state,
        desc="subject decoder",
        progress=progress,
    )
    decoder = accelerator.unwrap_model(objective).model.cpu().eval()
    metrics = {"steps": steps, "fps": fps, "train_frames": len(train), "heldout_frames": len(val)}
    for name, poses in (("train", train), ("heldout", val)):
        if len(poses):
            result = align(_body_only(poses), prior, decoder, strength=1.0, ood_range=None)  # the decoder's own change
            metrics[f"{name}_change_deg"] = float(result.change_deg.mean())
            metrics[f"{name}_ood_before"] = float(result.ood_before.mean())
            metrics[f"{name}_ood_after"] = float(result.ood_after.mean())
    if accelerator.is_main_process:
        _save_model(decoder, out_dir, metrics)
    accelerator.wait_for_everyone()
    return TrainResult(decoder, metrics, out_dir)


def _body_only(body_pose: torch.Tensor) -> SmplxPose:
    """A :class:`SmplxPose` (T frames) with the given body pose (T, 21, 3) and zeros elsewhere."""
    pose = SmplxPose.zeros(len(body_pose), dtype=body_pose.dtype)
    pose.body_pose = body_pose
    return pose
