"""The foundation demo: drive the body template with a SMPL-X-layout motion and rasterize it.

No trained avatar yet: each pixel is coloured by the template's canonical coordinate under it
(a fixed colour per point of the body) and shaded by the surface normal, so the video shows
the template, the pose mapping and the rasterizer working together.
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import torch
from tqdm import tqdm

from ram_avatar.atomic import staged_file
from ram_avatar.body import JOINT_NAMES, BodyTemplate, SmplxPose
from ram_avatar.pipelines.video import VideoWriter, even_size
from ram_avatar.render import Camera, interpolate, rasterize

_J = {name: i for i, name in enumerate(JOINT_NAMES)}


def wave_motion(num_frames: int = 60) -> SmplxPose:
    """A short procedural motion (num_frames poses): the right arm waves with a bent elbow, the
    left arm swings down and up, the left hand closes into a fist and opens, the jaw opens,
    and the body turns a little. Every part of the layout gets exercised."""
    phase = torch.linspace(0, 2 * math.pi, num_frames)
    full = torch.zeros(num_frames, 55, 3)
    full[:, _J["pelvis"], 1] = 0.35 * torch.sin(phase)  # turn left and right
    full[:, _J["right_shoulder"], 2] = -0.6 - 0.25 * torch.sin(2 * phase)  # arm raised, waving
    full[:, _J["right_elbow"], 1] = 1.2 + 0.4 * torch.sin(4 * phase)
    full[:, _J["left_shoulder"], 2] = -1.2 * (0.5 + 0.5 * torch.cos(phase))  # down and back up
    curl = 1.3 * (0.5 - 0.5 * torch.cos(2 * phase))
    for finger in ("index", "middle", "ring", "pinky"):
        for k in (1, 2, 3):
            full[:, _J[f"left_{finger}{k}"], 2] = -curl
    full[:, _J["jaw"], 0] = 0.25 * (0.5 - 0.5 * torch.cos(3 * phase))
    for side in ("left", "right"):  # a gentle knee bend
        full[:, _J[f"{side}_hip"], 0] = -0.25 * (0.5 - 0.5 * torch.cos(2 * phase))
        full[:, _J[f"{side}_knee"], 0] = 0.5 * (0.5 - 0.5 * torch.cos(2 * phase))
    return SmplxPose.from_full(full, torch.zeros(num_frames, 3))


def shade(canonical: torch.Tensor, mask: torch.Tensor, normals_cam: torch.Tensor) -> torch.Tensor:
    """RGB uint8 frames (B, H, W, 3): canonical-coordinate colours, Lambert-shaded, white background.

    Args:
        canonical: (B, H, W, 3) interpolated canonical coordinates in [-1, 1].
        mask: (B, H, W) bool, pixels covered by the body.
        normals_cam: (B, H, W, 3) interpolated normals in camera coordinates.
    """
    albedo = canonical * 0.5 + 0.5
    light = torch.nn.functional.normalize(torch.tensor([0.3, -0.4, -1.0]), dim=0)  # from the camera
    lambert = (torch.nn.functional.normalize(normals_cam, dim=-1) * light).sum(-1).clamp(min=0)
    rgb = albedo * (0.35 + 0.65 * lambert[..., None])
    rgb = torch.where(mask[..., None], rgb, torch.ones_like(rgb))
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def render_demo(
    template: BodyTemplate,
    out_path: str | Path,
    num_frames: int = 60,
    image_size: int = 256,
    fps: float = 30,
) -> Path:
    """Render ``wave_motion`` on ``template`` into an mp4 (and a PNG of its middle frame)."""
    out_path = Path(out_path)
    device = template.faces.device
    motion = wave_motion(num_frames).to(device)
    rest = template(SmplxPose.zeros(1, device=device))
    # One fixed camera for the whole clip, framing the T-pose (the widest the body gets).
    camera = Camera.framing(rest.vertices, (image_size, image_size), margin=0.08)
    with VideoWriter(out_path, fps) as video:  # encoded as the frames come, renamed into place when whole
        for i in tqdm(range(num_frames), desc="rendering demo", unit="frame"):
            body = template(motion[i])
            fragments = rasterize(body.vertices, template.faces, camera, (image_size, image_size))
            canonical = interpolate(fragments, template.faces, template.canonical)
            normals = interpolate(fragments, template.faces, body.normals @ camera.R[0].T)
            frame = shade(canonical, fragments.mask, normals)[0].cpu().numpy()
            video.write(even_size(frame))
            if i == num_frames // 2:
                middle = frame
    with staged_file(out_path.with_suffix(".png")) as tmp:
        iio.imwrite(tmp, middle)
    return out_path
