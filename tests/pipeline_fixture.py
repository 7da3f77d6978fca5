"""A tiny but trained whole avatar for the pipeline and app tests (built in code, ~20 s on a CPU).

A synthetic subject (the Anny template raising its arm, coloured by canonical coordinates, with a
flat face mesh on the head) -> a tiny RamAvatar trained a few steps -> a small pose prior and the
subject's MDA decoder trained a few steps -> ``RamAvatarPipeline.from_training`` -> saved folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ram_avatar.body.layout import JOINT_NAMES, SmplxPose
from ram_avatar.data import CameraTrack, SubjectData, TemplateInfo, write_subject
from ram_avatar.render import Camera, render_maps

N, SIZE = 16, 48
TINY = dict(
    texture_size=32,
    texture_channels=6,
    texture_levels=1,
    attention_hidden=4,
    attention_downsample=4,
    face_code_channels=3,
    map_hidden=4,
    map_channels=3,
    widths=[8, 12, 16],
    style_dim=8,
    decoder_convs=1,
)
# `ram-avatar train` options for a run of a few seconds on the synthetic subject (no perceptual loss)
TINY_TRAIN_OPTIONS = [
    *("--steps", "2", "--batch-size", "1", "--held-out-every", "4"),
    *("--set", "perceptual=0", "--set", "hand_perceptual=0", "--set", "discriminator_channels=8"),
    *("--model", f"widths={json.dumps(TINY['widths'])}", "--model", "texture_size=32"),
]
FAST = dict(
    batch_size=2,
    warmup_steps=2,
    discriminator_channels=8,
    discriminator_layers=2,
    held_out_every=4,
    eval_every=1000,
    checkpoint_every=1000,
    preview_every=1000,
    log_every=1,
    lr=1e-2,
    lr_discriminator=1e-2,
    hand_crop_size=16,
    perceptual=0.0,
    hand_perceptual=0.0,
)


def synthetic_subject(template) -> SubjectData:
    """The template raising its left arm over N frames, with a face mesh of 478 points on its head."""
    pose = SmplxPose.zeros(N)
    pose.body_pose[:, 15, 2] = torch.linspace(-1.2, 0.2, N)  # left shoulder
    pose.body_pose[:, 16, 2] = 1.2
    pose.transl[:, 2] = -2.5  # in front of a camera at the origin, as the tracker's world has it
    with torch.no_grad():
        body = template(pose)
        camera = Camera.look_at(
            torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]), focal=60.0, image_size=(SIZE, SIZE)
        )
        camera = Camera(camera.K.expand(N, 3, 3), camera.R.expand(N, 3, 3), camera.t.expand(N, 3), (SIZE, SIZE))
        maps = render_maps(body.vertices, template.faces, template.uvs, template.uv_faces, template.canonical, camera)
        head = body.joints[:, JOINT_NAMES.index("head")]
        grid = torch.stack(
            torch.meshgrid(torch.linspace(-0.07, 0.07, 22), torch.linspace(-0.09, 0.09, 22), indexing="xy"), -1
        )
        mesh = head[:, None] + torch.cat(
            [grid.reshape(-1, 2)[:478], torch.full((478, 1), 0.1)], -1
        )  # world, in front of the face
        mesh_cam = camera.world_to_camera(mesh)
        face_px, _ = camera.project(mesh)
    frames = ((maps["canonical"] * 0.5 + 0.5) * maps["mask"][..., None] * 255).round().to(torch.uint8).numpy()
    masks = (maps["mask"].to(torch.uint8) * 255).numpy()
    face = torch.cat([face_px, torch.ones(N, 478, 1)], -1).numpy()
    return SubjectData(
        frames=frames,
        masks=masks,
        pose=pose,
        shape=np.full(6, 0.5, np.float32),
        expression=np.zeros((N, 52), np.float32),
        camera=CameraTrack(
            camera.K.numpy(), camera.R.numpy(), camera.t.numpy(), np.tile([0, 0, SIZE, SIZE], (N, 1)).astype(np.float32)
        ),
        keypoints={
            "body": np.zeros((N, 33, 3), np.float32),
            "left_hand": np.zeros((N, 21, 3), np.float32),
            "right_hand": np.zeros((N, 21, 3), np.float32),
            "face": face.astype(np.float32),
            "face_mesh": mesh_cam.numpy().astype(np.float32),
        },
        template=TemplateInfo("anny", "anny-phenotype-6", "anny-arkit-52"),
        keypoint_layouts={"body": "mediapipe-pose-33", "hand": "mediapipe-hand-21", "face": "mediapipe-face-478"},
        fps=30.0,
        source_video="synthetic.mp4",
        source_size=(SIZE, SIZE),
        frame_indices=list(range(N)),
    )


def make_tiny_avatar(root: Path, template, mda: bool = True) -> Path:
    """Train the tiny avatar (and MDA parts) under ``root``; returns the saved avatar folder."""
    from ram_avatar.pipelines import RamAvatarPipeline
    from ram_avatar.training import TrainConfig, train

    subject = write_subject(root / "subject", synthetic_subject(template))
    train(subject, root / "run", TrainConfig.from_dict({**FAST, "model_overrides": TINY, "steps": 4}), progress=False)
    decoder = prior = None
    if mda:
        from ram_avatar.mda import train_prior, train_subject_decoder

        poses = SmplxPose.zeros(64)
        poses.body_pose[:, 15, 2] = torch.linspace(-1.4, 0.6, 64)
        poses.body_pose[:, 16, 2] = torch.linspace(1.4, -0.6, 64)
        prior = train_prior(
            [poses],
            root / "prior",
            steps=10,
            model_kwargs={"latent_dim": 8, "hidden_dim": 32},
            position_weight=0.0,
            progress=False,
            checkpoint_every=10_000,
        ).model
        decoder = train_subject_decoder(
            subject,
            prior,
            root / "decoder",
            steps=10,
            model_kwargs={"hidden_dim": 32},
            position_weight=0.0,
            progress=False,
            checkpoint_every=10_000,
        ).model
    pipe = RamAvatarPipeline.from_training(
        subject, root / "run" / "avatar", decoder=decoder, prior=prior, name="tiny", device="cpu"
    )
    return pipe.save_pretrained(root / "tiny")


def wave_motion_file(path: Path, frames: int = 20) -> Path:
    """A short motion file (our .npz) of the right arm waving, at 30 fps."""
    from ram_avatar.motion import Motion, save_motion

    pose = SmplxPose.zeros(frames)
    pose.body_pose[:, 16, 2] = 0.4 * torch.sin(torch.linspace(0, 6.28, frames))
    pose.body_pose[:, 15, 2] = -1.0
    return save_motion(Motion(pose, 30.0, "wave", "test"), path)
