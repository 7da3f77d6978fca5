"""Train an avatar on a subject dataset (paper section 3.4), with Accelerate.

    python -m ram_avatar.training.train_avatar SUBJECT_DIR OUT_DIR [--config rt-256] [--minutes 30]
    accelerate launch -m ram_avatar.training.train_avatar SUBJECT_DIR OUT_DIR ...   # multi-GPU
    ram-avatar train SUBJECT_DIR OUT_DIR ...                                        # the same

Each step: the generator renders the centre frame of a (t-1, t, t+1) triplet (RGB + alpha,
composited on a random colour per item, the same as the ground truth's); the temporal discriminator takes a step
on real (three GT frames) against fake (GT_{t-1}, prediction, GT_{t+1}) triplets; then the
generator takes a step on L1 + alpha + VGG16 perceptual + hand-crop perceptual + GAN terms.
Adam, warm-up + cosine learning-rate schedule (stepped every step; with a time limit the cosine
runs over whichever of the steps or the minutes ends first), gradient clipping, an EMA of the
generator that is what gets evaluated and saved. A ``colour_skip`` model starts from the
subject's colours unprojected onto its texture (``ram_avatar.training.unproject``), training
frames only.

OUT_DIR receives: ``train_config.json``, ``checkpoints/last`` and ``checkpoints/best`` (Accelerate
state + ``ema.safetensors`` + ``trainer_state.json``, each written under a temporary name and
renamed into place), TensorBoard logs in ``logs/``, ``preview.png`` (GT | prediction | error,
held-out frame on top), ``cache/`` (the rasterized input maps), and at the end ``avatar/`` (the
EMA avatar via ``save_pretrained`` with its model card) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import pickle
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ram_avatar.atomic import remove_shared_partials, replace_folder, shared_partial, staged_file
from ram_avatar.schedule import cosine_factor
from ram_avatar.training.held_out import model_map_cache, render_frames

CHECKPOINTS = "checkpoints"
CONFIG_FILE = "train_config.json"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``train_config.json``; a resume must match).

    ``steps`` is both where training stops and the horizon of the cosine schedule; it is the one
    setting a resume may change (to extend a run). Loss weights multiply terms on images in [0, 1].
    """

    config: str = "rt-256"  # named avatar size, ram_avatar.models.configs
    model_overrides: dict[str, Any] = field(default_factory=dict)  # RamAvatar / BaselineUNet kwargs
    baseline: bool = False  # train the plain U-Net comparison instead of RamAvatar
    steps: int = 20_000
    batch_size: int = 2
    lr: float = 5e-4  # StyleAvatar uses 2e-3 with equalized-lr layers; ours (plain He init) diverge at that rate
    lr_discriminator: float = 5e-4
    betas: tuple[float, float] = (0.0, 0.99)
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1  # the cosine decays the rate to this fraction at ``steps``
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    l1: float = 1.0
    # The defaults are the CPU recipe (rt-256), measured on pose2sim, held out, 2 cores: L1 + alpha
    # alone takes a step in half the time of the paper's L1 + VGG16 perceptual + hand perceptual +
    # GAN (4 minutes: ~1,000 steps instead of 463) and beats it on every metric, LPIPS included
    # (whole PSNR / SSIM / LPIPS-alex 29.5 / 0.946 / 0.065, person-only PSNR 23.6, against 27.3 /
    # 0.925 / 0.074 and 22.1). Even at equal steps (460) the perceptual term costs 0.5 dB
    # person-only PSNR for no LPIPS gain, and the GAN 0.2 dB. A heavy alpha term puts the outline
    # where the mask is (5 to 20 instead of 1 at 460 steps: +0.4 dB person-only PSNR, +0.9 to 1.2
    # dB whole-frame). PAPER_LOSSES is the paper's mix, the default of hq-512 and paper-1024
    # (``TrainConfig.for_config``).
    alpha: float = 10.0  # weight of the alpha term: predicted alpha against the person mask
    # "l1" or "mse" (squared error: a soft edge where the mask a pose should give is uncertain).
    # MSE x 20 against L1 x 10, held out: on tfjs_synthetic_dance at 4,000 steps (1 thread) whole
    # PSNR / SSIM / LPIPS-alex 37.9 / 0.968 / 0.034 against 37.5 / 0.967 / 0.038 and person-only
    # PSNR 30.1 against 29.5 dB; on the real pose2sim clip, `create --minutes 30` (2 threads, same
    # machine, ~3,250 steps) 30.5 / 0.950 / 0.061 against 30.7 / 0.953 / 0.060 and 24.8 dB both.
    # Not better on the real clip, so L1 stays the default.
    alpha_loss: str = "l1"
    perceptual: float = 0.0
    hand_perceptual: float = 0.0
    gan: float = 0.0
    # VGG16 costs most of a CPU step at full size (256^2: ~3x the rest): it sees the frames resized
    # to this side (None: full size). A full-resolution 128^2 window around the person instead was
    # no better (0.004 LPIPS behind after 300 steps on pose2sim) and is not offered.
    perceptual_size: int | None = 128
    hand_crop_size: int = 64
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    background: float = 0.0  # the background of evaluation and previews (and of training without random_background)
    # Training composites each item on a random colour: with one fixed colour, alpha and colour
    # are not both determined (a dark person on black fits with any alpha), and the avatar shows
    # as a pale ghost on any other background.
    random_background: bool = True
    # Camera jitter (``ram_avatar.training.augment``): each item seen through a camera zoomed by
    # up to 1 + camera_zoom, rolled by up to camera_roll degrees and shifted by up to
    # camera_shift x the frame size; all 0: off. On tfjs_synthetic_dance (L1 + alpha 1, 2,500
    # steps, 1 thread) zoom 0.15 / shift 0.1 cut the wave's ragged outline from 99 to 79 pixels a
    # frame (benchmarks/novel_outline.py; no dark strands down the leg) for 0.3 / 0.5 dB held-out
    # whole / person-only PSNR; zoom 0.3 / shift 0.15 gave 84, a roll no gain (15 degrees: 62
    # against 65 at 1,500 steps, 0.4 dB behind; 30: 84). Off by default: it trades fit for new
    # poses, which a short `create` cannot afford; the bundled example trains with it.
    camera_zoom: float = 0.0
    camera_shift: float = 0.0
    camera_roll: float = 0.0
    init_colours: bool = True  # colour_skip models: texture colours start from the training frames
    held_out_every: int = 10  # SubjectDataset.split: every k-th frame is held out
    eval_every: int = 500
    checkpoint_every: int = 500
    preview_every: int = 250
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        # Here, not in from_dict, so that a TrainConfig built directly fails now, not at step 1.
        if self.alpha_loss not in ALPHA_LOSSES:
            raise ValueError(f"alpha_loss must be one of {list(ALPHA_LOSSES)}, not {self.alpha_loss!r}")
        if self.camera_zoom < 0 or not 0 <= self.camera_shift < 0.5 or not 0 <= self.camera_roll <= 180:
            raise ValueError(
                "camera_zoom must be >= 0, camera_shift in [0, 0.5) (a fraction of the frame size) and "
                f"camera_roll in [0, 180] degrees; got {self.camera_zoom}, {self.camera_shift} and {self.camera_roll}"
            )

    @classmethod
    def for_config(cls, config: str = "rt-256", **values: Any) -> TrainConfig:
        """The training recipe of the named avatar size (``RECIPES``), with ``values`` on top."""
        return cls.from_dict({**RECIPES.get(config, {}), "config": config, **values})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(names)}")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}


# The paper's loss mix (temporal GAN on frame triplets + L1 + VGG perceptual + hand perceptual),
# the training recipe of the GPU-sized avatars; rt-256 trains with TrainConfig's defaults.
PAPER_LOSSES: dict[str, Any] = dict(lr=5e-4, alpha=1.0, perceptual=1.0, hand_perceptual=1.0, gan=0.01)
ALPHA_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}
RECIPES: dict[str, dict[str, Any]] = {"hq-512": PAPER_LOSSES, "paper-1024": PAPER_LOSSES}


# --- building blocks --------------------------------------------------------------------------


def build_generator(config: TrainConfig) -> torch.nn.Module:
    """A fresh RamAvatar of the named size, or the BaselineUNet with the same texture and encoders."""
    from ram_avatar.models import BaselineUNet, RamAvatar, get_config

    if not config.baseline:
        return RamAvatar.from_config_name(config.config, **config.model_overrides)
    import inspect

    accepted = set(inspect.signature(BaselineUNet.__init__).parameters) - {"self"}
    values = {**get_config(config.config), **config.model_overrides}
    return BaselineUNet(**{k: v for k, v in values.items() if k in accepted})


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema = d * ema + (1 - d) * model, d = min(decay, (1 + step) / (10 + step)): the warm-up keeps a
    short run's EMA from averaging in the random initialisation."""
    d = min(decay, (1 + step) / (10 + step))
    ema_params, params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@torch.no_grad()
def init_colours(generator: torch.nn.Module, subject, template, frames: list[int]) -> None:  # noqa: ANN001
    """Set a ``colour_skip`` generator's texture colour channels to ``frames``' colours (RGB - 0.5
    in the finest level, zero in the coarser ones, whose sum is what is sampled)."""
    from ram_avatar.training.unproject import subject_colours

    levels = generator.texture.levels
    colour = subject_colours(subject, template, frames, levels[0].shape[1]).to(levels[0])
    levels[0][0, ..., :3] = colour.permute(1, 2, 0) - 0.5
    for level in levels[1:]:
        level[0, ..., :3] = 0


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def remove_stale_checkpoints(root: Path) -> None:
    """Remove what a run killed while saving left in ``root`` (``checkpoints/``): half-written
    ``.last.writing-STEP`` / ``.best.writing-STEP`` copies; a complete folder moved aside is put back."""
    for name in ("last", "best"):
        remove_shared_partials(root / name)


def check_checkpoint(folder: Path, advice: str) -> None:
    """Name a missing or damaged file of the checkpoint ``folder`` before Accelerate fails on it
    without saying which: safetensors headers are read, ``torch.save`` files must be zip archives,
    JSON must parse. Raises ValueError ending in ``advice``."""
    from safetensors import SafetensorError, safe_open

    for name in ("model.safetensors", EMA_FILE, STATE_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"the checkpoint {folder} is incomplete ({name} is missing): {advice}")
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, "pt"):
                    pass
            elif path.suffix == ".bin" and not zipfile.is_zipfile(path):
                raise ValueError("not a PyTorch file")
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except (SafetensorError, ValueError) as error:
            raise ValueError(f"the checkpoint file {path} is damaged ({error}): {advice}") from error


def _write_json(path: Path, data: Any) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- one step -----------------------------------------------------------------------------------


def background_colours(batch_size: int, seed: int, step: int) -> torch.Tensor:
    """(B, 3, 1, 1) random training background colours, a pure function of (seed, step) like the
    batches (``StepBatchSampler``), so that a resumed run draws the same ones."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step + 7919)
    return torch.rand(batch_size, 3, 1, 1, generator=generator)


def train_step(batch: dict, parts: dict, config: TrainConfig, accelerator) -> dict[str, float]:  # noqa: ANN001
    """One discriminator step then one generator step; returns the losses as floats.

    Prediction and ground truth are composited on ``batch["background"]`` (B, 3, 1, 1) when
    given (the run's random colours), else on ``config.background``."""
    from ram_avatar.models import triplet
    from ram_avatar.training.objectives import (
        composite,
        crop,
        discriminator_loss,
        generator_gan_loss,
        hand_boxes,
    )

    generator, discriminator = parts["generator"], parts["discriminator"]
    bg = batch.get("background", config.background)  # (B, 3, 1, 1) per triplet, see background_colours
    gt = composite(batch["image"], batch["mask"], bg)
    previous = composite(batch["previous"], batch["previous_mask"], bg)
    following = composite(batch["following"], batch["following_mask"], bg)
    weight = batch["triplet_valid"].float()
    with accelerator.autocast():
        out = generator(batch["maps"])
    pred = composite(out["rgb"], out["alpha"], bg)
    logs: dict[str, float] = {}

    if config.gan > 0:  # discriminator: real = three GT frames, fake = prediction between GT neighbours
        discriminator.requires_grad_(True)
        real, fake = triplet(previous, gt, following), triplet(previous, pred.detach(), following)
        with accelerator.autocast():
            real_logits, fake_logits = discriminator(torch.cat([real, fake])).chunk(2)
        d_loss = discriminator_loss(real_logits, fake_logits, weight)
        parts["opt_d"].zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        accelerator.clip_grad_norm_(discriminator.parameters(), config.grad_clip)
        parts["opt_d"].step()
        logs["loss/discriminator"] = d_loss.item()
        logs["d/real_logit"] = real_logits.mean().item()
        logs["d/fake_logit"] = fake_logits.mean().item()
    parts["sched_d"].step()

    terms = {"l1": F.l1_loss(pred, gt), "alpha": ALPHA_LOSSES[config.alpha_loss](out["alpha"], batch["mask"])}
    perceptual = parts["perceptual"]
    if perceptual is not None:
        size = config.perceptual_size
        small = (
            (lambda x: F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)) if size else (lambda x: x)
        )  # noqa: E731
        terms["perceptual"] = perceptual(small(pred), small(gt))
        if config.hand_perceptual > 0:
            boxes, valid = hand_boxes(batch["maps"]["hand_keypoints"], tuple(gt.shape[-2:]))
            if valid.any():
                keep = valid.flatten()
                pred_hands = crop(pred, boxes, config.hand_crop_size)[keep]
                gt_hands = crop(gt, boxes, config.hand_crop_size)[keep]
                terms["hand_perceptual"] = perceptual(pred_hands, gt_hands)
    if config.gan > 0:
        # The raw discriminator (not the DDP wrapper), frozen: only the prediction gets gradients.
        raw = accelerator.unwrap_model(discriminator).requires_grad_(False)
        with accelerator.autocast():
            terms["gan"] = generator_gan_loss(raw(triplet(previous, pred, following)), weight)
    total = sum(getattr(config, name) * value for name, value in terms.items())
    parts["opt_g"].zero_grad(set_to_none=True)
    accelerator.backward(total)
    logs["grad_norm/generator"] = float(accelerator.clip_grad_norm_(generator.parameters(), config.grad_clip))
    parts["opt_g"].step()
    parts["sched_g"].step()
    logs.update({f"loss/{name}": value.item() for name, value in terms.items()})
    logs["loss/total"] = total.item()
    logs["lr"] = parts["sched_g"].get_last_lr()[0]
    return logs


# --- evaluation and previews --------------------------------------------------------------------


def held_out_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, float | None]:
    """PSNR / SSIM / LPIPS (alex) of the whole composited frames, and the same over the person
    only (``*_masked``: ``ram_avatar.metrics`` with the GT mask; whole frames are mostly empty
    background, which flatters a blurry avatar).

    LPIPS is None (with a printed reason, once) when its weights are not installed.
    """
    from ram_avatar import metrics

    names = ("psnr", "ssim", "lpips_alex")
    values = {name: result.value for name, result in metrics.evaluate(pred, gt, metrics=names).items()}
    person = metrics.evaluate(pred, gt, mask, metrics=names)
    values.update({f"{name}_masked": result.value for name, result in person.items()})
    return values


def preview_image(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """(H, 3W, 3) uint8 per row of GT | prediction | 4x absolute error, rows stacked vertically."""
    tiles = [torch.cat([gt, pred, ((pred - gt).abs() * 4).clamp(0, 1)], -1) for gt, pred in rows]
    image = torch.cat(tiles, -2).clamp(0, 1)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


# --- the run ------------------------------------------------------------------------------------


class Trainer:
    """One training run; ``run()`` trains until the step or time limit, evaluates and saves.

    Stops at ``config.steps`` (total, across resumes) or after ``minutes`` of wall time in this
    run, whichever comes first.

    Args:
        subject_dir: a subject dataset (``ram-avatar track``).
        out_dir: the run's folder (module docstring); a new run refuses one that holds a run.
        config: the settings; with ``resume`` they must match the saved ones except ``steps``.
        resume: continue from ``out_dir/checkpoints/last``: step, weights, optimisers,
            schedulers, EMA, RNG and the data order all continue exactly.
        minutes: wall-time limit of this call.
        body_model_path: SMPL-X subjects: the folder with ``SMPLX_NEUTRAL.npz``.
        cpu: train on the CPU even where CUDA is present.
        progress: show progress bars.
        repo_id: the Hub id the model card's usage example names (when it will be pushed).
        cache_dir: where the rasterized input maps are cached (default ``out_dir/cache``).
    """

    def __init__(
        self,
        subject_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        config: TrainConfig,
        *,
        resume: bool = False,
        minutes: float | None = None,
        body_model_path: str | None = None,
        cpu: bool = False,
        progress: bool = True,
        repo_id: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from ram_avatar.body import load_template
        from ram_avatar.data import SubjectDataset, load_subject
        from ram_avatar.losses import PerceptualLoss
        from ram_avatar.models import TemporalDiscriminator
        from ram_avatar.training.augment import CameraJitter
        from ram_avatar.training.data import StepBatchSampler, TripletDataset

        self.subject_dir, self.out = Path(subject_dir), Path(out_dir)
        self._clock: tuple[float, float] | None = None  # (start, deadline) of a timed run, see time_progress
        self.config = self._settle_config(config, resume)
        self.minutes, self.progress, self.repo_id = minutes, progress, repo_id
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            log_with = None
            print(
                "tensorboard is not installed: no TensorBoard logs (pip install tensorboard==2.20.0)", file=sys.stderr
            )
        self.accelerator = Accelerator(
            cpu=cpu, log_with=log_with, project_dir=str(self.out), step_scheduler_with_optimizer=False
        )
        accelerator, device = self.accelerator, self.accelerator.device
        set_seed(self.config.seed)  # the same initial weights on every process

        self.subject = load_subject(self.subject_dir)
        self.train_frames, self.held_out = SubjectDataset(self.subject).split(self.config.held_out_every)
        if not self.held_out:
            raise ValueError(
                f"{self.subject_dir} has {self.subject.num_frames} frames: too few to hold out every "
                f"{self.config.held_out_every}th; lower --held-out-every or track a longer clip"
            )
        generator = build_generator(self.config).to(device)
        template = load_template(self.subject.template.name, device=device, model_path=body_model_path)
        if not resume and self.config.init_colours and getattr(generator, "colour_skip", False):
            init_colours(generator, self.subject, template, self.train_frames)
        with accelerator.main_process_first():  # one process rasterizes, the others reuse the cache
            shown = progress and accelerator.is_main_process
            cache = model_map_cache(generator, self.subject, template, cache_dir or self.out / "cache", shown)
        self.train_set = TripletDataset(self.subject, cache, self.train_frames, self.train_frames)
        c, self.jitter = self.config, None
        if c.camera_zoom > 0 or c.camera_shift > 0 or c.camera_roll > 0:
            settings = json.loads((cache / "settings.json").read_text())
            self.jitter = CameraJitter(self.subject, template, settings, c.camera_zoom, c.camera_shift, c.camera_roll)
        self.held_out_set = TripletDataset(self.subject, cache, self.held_out, None)

        discriminator = TemporalDiscriminator(c.discriminator_channels, c.discriminator_layers).to(device)
        opt_g = torch.optim.Adam(generator.parameters(), lr=c.lr, betas=c.betas)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=c.lr_discriminator, betas=c.betas)

        def schedule(step: int) -> float:
            return cosine_factor(step, c.steps, c.warmup_steps, c.final_lr_ratio, self.time_progress())

        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, schedule)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, schedule)
        generator, discriminator, opt_g, opt_d, sched_g, sched_d = accelerator.prepare(
            generator, discriminator, opt_g, opt_d, sched_g, sched_d
        )
        self.ema = copy.deepcopy(accelerator.unwrap_model(generator)).requires_grad_(False).eval()
        perceptual = None
        if c.perceptual > 0 or c.hand_perceptual > 0:
            loss = PerceptualLoss()
            perceptual = loss.to(device) if loss.available else None  # it warned once when not
        self.parts = dict(
            generator=generator,
            discriminator=discriminator,
            opt_g=opt_g,
            opt_d=opt_d,
            sched_g=sched_g,
            sched_d=sched_d,
            perceptual=perceptual,
        )
        self.state = {"step": 0, "best": None, "history": [], "train_seconds": 0.0}
        if resume:
            self._load_checkpoint()
        sampler = StepBatchSampler(
            len(self.train_set), c.batch_size, c.seed * 1000 + accelerator.process_index, self.state["step"]
        )
        self.loader = torch.utils.data.DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=c.num_workers, persistent_workers=c.num_workers > 0
        )
        if accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_checkpoints(self.out / CHECKPOINTS)  # no process of this run has saved yet
            _write_json(self.out / CONFIG_FILE, self.config.to_dict())
        accelerator.init_trackers("logs", config={k: str(v) for k, v in self.config.to_dict().items()})

    def time_progress(self) -> float:
        """The fraction of this call's time budget spent (0 without ``minutes`` or before ``run``)."""
        if self._clock is None:
            return 0.0
        start, deadline = self._clock
        return min((time.monotonic() - start) / max(deadline - start, 1e-9), 1.0)

    def _settle_config(self, config: TrainConfig, resume: bool) -> TrainConfig:
        """On resume the saved config rules (only ``steps`` may change); a new run needs a fresh OUT_DIR."""
        saved_file, last = self.out / CONFIG_FILE, self.out / CHECKPOINTS / "last"
        if not resume:
            if last.exists():
                raise FileExistsError(
                    f"{self.out} already holds a training run: pass --resume to continue it, or choose another OUT_DIR"
                )
            return config
        if not last.is_dir() or not saved_file.is_file():
            raise FileNotFoundError(f"nothing to resume: {last} is missing; start without --resume")
        saved = TrainConfig.from_dict(json.loads(saved_file.read_text(encoding="utf-8")))
        differ = [k for k, v in config.to_dict().items() if k != "steps" and saved.to_dict()[k] != v]
        if differ:
            raise ValueError(
                f"{self.out} was trained with different settings ({', '.join(differ)}); resume with the "
                f"original options (see {saved_file}) or start a new OUT_DIR"
            )
        return dataclasses.replace(saved, steps=config.steps)

    # checkpoints ------------------------------------------------------------------------------

    def _save_checkpoint(self, is_best: bool) -> None:
        """Accelerate state + EMA + trainer state into ``checkpoints/last`` (and ``best``), atomically."""
        from safetensors.torch import save_file

        accelerator, root = self.accelerator, self.out / CHECKPOINTS
        staging = shared_partial(root / "last", self.state["step"])  # the same name in every process
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))  # every process saves its RNG state; main the rest
        if accelerator.is_main_process:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.ema.state_dict().items()}, staging / EMA_FILE)
            _write_json(staging / STATE_FILE, self.state)
            replace_folder(staging, root / "last")
            if is_best:
                best_staging = shared_partial(root / "best", self.state["step"])
                shutil.copytree(root / "last", best_staging)
                replace_folder(best_staging, root / "best")
        accelerator.wait_for_everyone()

    def _load_checkpoint(self) -> None:
        """Restore ``checkpoints/last``; a damaged or missing file there is a ValueError naming it."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        last = self.out / CHECKPOINTS / "last"
        advice = (
            f"replace {last} with a copy of {last.parent / 'best'} to resume from an earlier step, or start a "
            "new OUT_DIR"
        )
        check_checkpoint(last, advice)
        try:
            self.accelerator.load_state(str(last))
            self.ema.load_state_dict(load_file(last / EMA_FILE, device=str(self.accelerator.device)))
            self.state = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as error:  # a file Accelerate wants (e.g. optimizer.bin)
            missing = Path(error.filename).name if error.filename else error
            raise ValueError(f"the checkpoint {last} is incomplete ({missing} is missing): {advice}") from error
        except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError) as error:
            why = f"{type(error).__name__}: {error}"
            raise ValueError(f"the checkpoint {last} cannot be loaded ({why}): {advice}") from error

    # evaluation -------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float | None]:
        """Held-out metrics of the EMA generator; logs them and writes the preview."""
        device = self.accelerator.device
        pred, gt, mask = render_frames(self.ema, self.held_out_set, device, self.config.background)
        values = held_out_metrics(pred, gt, mask)
        self.state["history"].append({"step": self.state["step"], **values})
        self.accelerator.log({f"held_out/{k}": v for k, v in values.items() if v is not None}, step=self.state["step"])
        self._preview((gt[0], pred[0]))
        return values

    def _preview(self, held_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """preview.png (and a TensorBoard image): a held-out frame, then the first training frame."""
        import imageio.v3 as iio

        if not self.accelerator.is_main_process:
            return
        device = self.accelerator.device
        if held_out is None:
            first = torch.utils.data.Subset(self.held_out_set, [0])
            pred, gt, _ = render_frames(self.ema, first, device, self.config.background)
            held_out = (gt[0], pred[0])
        first = torch.utils.data.Subset(self.train_set, [0])
        pred, gt, _ = render_frames(self.ema, first, device, self.config.background)
        image = preview_image([held_out, (gt[0], pred[0])])
        with staged_file(self.out / "preview.png") as tmp:
            iio.imwrite(tmp, image, plugin="pillow")
        if self.accelerator.trackers:
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("preview (GT | prediction | error)", image, self.state["step"], dataformats="HWC")

    # the loop ---------------------------------------------------------------------------------

    def run(self, until_step: int | None = None) -> dict[str, Any]:
        """Train to ``until_step`` (default ``config.steps``, the schedule's horizon either way) or
        ``minutes`` of wall time; then evaluate, checkpoint, save the avatar and metrics.json."""
        c, accelerator, state = self.config, self.accelerator, self.state
        until_step = c.steps if until_step is None else min(until_step, c.steps)
        start, started_at = time.monotonic(), state["step"]
        deadline = None if self.minutes is None else start + 60 * self.minutes
        self._clock = None if deadline is None else (start, deadline)  # the LR schedule's time axis
        bar = tqdm(
            total=until_step,
            initial=state["step"],
            desc="train",
            disable=not (self.progress and accelerator.is_main_process),
        )
        batches = iter(self.loader)
        for model in (self.parts["generator"], self.parts["discriminator"]):
            model.train()
        while state["step"] < until_step and (deadline is None or time.monotonic() < deadline):
            batch = next(batches)
            if c.random_background:  # one colour per triplet: the discriminator sees consistent frames
                seed = c.seed * 1000 + accelerator.process_index
                batch["background"] = background_colours(len(batch["index"]), seed, state["step"])
            batch = to_device(batch, accelerator.device)
            if self.jitter is not None:
                batch = self.jitter(batch, c.seed * 1000 + accelerator.process_index, state["step"])
            logs = train_step(batch, self.parts, c, accelerator)
            update_ema(self.ema, accelerator.unwrap_model(self.parts["generator"]), c.ema_decay, state["step"])
            state["step"] += 1
            state["last_losses"] = logs
            step = state["step"]
            bar.update(1)
            postfix = {"loss": f"{logs['loss/total']:.4f}"}
            if deadline is not None:
                postfix["left"] = f"{max(deadline - time.monotonic(), 0) / 60:.1f} min"
            bar.set_postfix(postfix)
            if step % c.log_every == 0:
                accelerator.log(logs, step=step)
            evaluated = step % c.eval_every == 0
            if evaluated:
                self._evaluated_checkpoint(step % c.checkpoint_every == 0)
            elif step % c.checkpoint_every == 0:
                self._save_checkpoint(is_best=False)
            if step % c.preview_every == 0 and not evaluated:
                self._preview()
        bar.close()
        state["train_seconds"] += time.monotonic() - start
        steps_now = state["step"] - started_at
        final = self._evaluated_checkpoint(save=True) if steps_now or not state["history"] else state["history"][-1]
        result = {"step": state["step"], "steps_this_run": steps_now, "held_out": final}
        if accelerator.is_main_process:
            result = self._save_avatar(final)
        accelerator.end_training()
        return result

    def _evaluated_checkpoint(self, save: bool) -> dict[str, float | None]:
        values = self.evaluate()
        best = self.state["best"]
        is_best = best is None or values["psnr"] > best["psnr"]
        if is_best:
            self.state["best"] = {"step": self.state["step"], **values}
        if save:
            self._save_checkpoint(is_best)
        return values

    def _white_preview(self, count: int = 4) -> np.ndarray:
        """(H, 2 * count * W, 3) uint8: ``count`` held-out frames, ground truth | avatar, on white
        (the card's picture: how the avatar looks off its training background)."""
        frames = np.linspace(0, len(self.held_out_set) - 1, min(count, len(self.held_out_set))).round().astype(int)
        subset = torch.utils.data.Subset(self.held_out_set, sorted(set(frames.tolist())))
        pred, gt, _ = render_frames(self.ema, subset, self.accelerator.device, 1.0)
        image = torch.cat([torch.cat([g, p], -1) for g, p in zip(gt, pred)], -1).clamp(0, 1)
        return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def _save_avatar(self, final: dict[str, float | None]) -> dict[str, Any]:
        from ram_avatar.training.card import save_avatar

        c, state = self.config, self.state
        metrics = {
            "model": type(self.ema).__name__,
            "config": c.config,
            "model_overrides": c.model_overrides,
            "steps": state["step"],
            "train_minutes": state["train_seconds"] / 60,
            "device": str(self.accelerator.device),
            "processes": self.accelerator.num_processes,
            "subject": str(self.subject_dir),
            "train_frames": len(self.train_frames),
            "held_out_frames": self.held_out,
            "background": c.background,
            "held_out": final,
            "best": state["best"],
        }
        save_avatar(
            self.ema, self.out / "avatar", self.subject, c, metrics, self.repo_id, preview=self._white_preview()
        )
        _write_json(self.out / "metrics.json", metrics)
        return metrics


def train(
    subject_dir: str | os.PathLike, out_dir: str | os.PathLike, config: TrainConfig | None = None, **options: Any
) -> dict[str, Any]:
    """Train an avatar on ``subject_dir`` into ``out_dir``; returns the metrics.json content.

    ``options`` are :class:`Trainer`'s keyword arguments (``resume``, ``minutes``, ...).
    """
    return Trainer(subject_dir, out_dir, config or TrainConfig(), **options).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m ram_avatar.training.train_avatar`` / ``accelerate launch -m ...``: the train command."""
    from ram_avatar.cli import run
    from ram_avatar.training.cli import add_train_arguments, run_train

    parser = argparse.ArgumentParser(prog="ram_avatar.training.train_avatar", description=__doc__.split("\n")[0])
    add_train_arguments(parser)
    parser.set_defaults(run=run_train)
    return run(parser.parse_args(argv), parser.prog)  # the CLI's one error path


if __name__ == "__main__":
    sys.exit(main())
