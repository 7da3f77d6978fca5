"""Avatar render speed: median milliseconds per frame and FPS, per named config and per part.

    python benchmarks/render_speed.py [--configs rt-256 hq-512 paper-1024] [--repeats 30]
                                      [--threads N] [--device cpu|cuda]

Batch 1, eval mode, no autograd, an untrained model (speed does not depend on the weights) on
the default Anny body in an arms-down pose, framed at each config's size, with its hands and a
flat synthetic face mesh over the head drawn. Parts:

    inputs        prepare_inputs: pose the template, rasterize body + expanded body, hand keypoints
    texture       neural texture sampling (F_cur)
    attention     everything of the dual attention given F_cur (pooling, F_exp, both branches)
    face + hand   the two drawn maps and their U-Nets
    renderer      the StyleUNet
    att + render  attention and renderer together: the real-time target (>= 30 FPS at 256^2)
    forward       RamAvatar.forward (everything but ``inputs``)

Besides wall time it prints the process CPU time per frame: when other programs share the
cores, wall times swing, while CPU time per frame barely moves (it is the better number to
compare configs on a busy machine; wall ~= CPU / threads on an idle one). The last table times
a StyleUNet of StyleAvatar's widths at the same input, for the ratio to ours.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ram_avatar.body import SmplxPose, load_template
from ram_avatar.models import RamAvatar, StyleUNet, config_image_size, flat_face_layout
from ram_avatar.models.dual_attention import attention_size
from ram_avatar.render import Camera

# StyleAvatar's StyleUNet channels per resolution (channel_multiplier 2), e.g. 1024^2 input:
# 64 at 512^2 down to 512 at 8^2.
STYLEAVATAR_CHANNELS = {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512}


def timed(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median wall and median process-CPU milliseconds of ``run`` (CUDA synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def scene(template, size: int, device: torch.device) -> tuple[SmplxPose, Camera, torch.Tensor]:
    """An arms-down pose, its framing camera, and a flat face mesh (``flat_face_layout``) over the head."""
    pose = SmplxPose.zeros(1, device=device)
    pose.body_pose[0, 15, 2] = -1.2  # left shoulder (joint 16): arm down
    pose.body_pose[0, 16, 2] = 1.2
    body = template(pose)
    camera = Camera.framing(body.vertices, image_size=(size, size))
    head, _ = camera.project(body.joints[:, 15:16])  # (1, 1, 2)
    face = torch.ones(1, 478, 3, device=device)
    face[0, :468, :2] = head[0] + 0.04 * size * flat_face_layout().to(device)  # ~ a face's size in frame
    return pose, camera, face


def report(rows: list[tuple[str, float, float]], title: str) -> None:
    print(f"\n{title}")
    print(f"{'part':<14}{'wall ms':>10}{'FPS':>9}{'CPU ms':>10}")
    for name, wall, cpu in rows:
        print(f"{name:<14}{wall:>10.1f}{1000 / wall:>9.1f}{cpu:>10.1f}")


def bench_config(name: str, template, device: torch.device, repeats: int) -> float:
    """Print the per-part table of one config; return its renderer's wall ms."""
    size = config_image_size(name)
    model = RamAvatar.from_config_name(name).to(device).eval()
    pose, camera, face = scene(template, size, device)
    maps = model.prepare_inputs(template, pose, camera, face_points=face)
    H = W = size
    small = attention_size(H, W, model.attention_downsample)
    with torch.no_grad():
        current = model.texture(maps["uv"], maps["mask"])
        pooled = F.adaptive_avg_pool2d(current, small)
        renderer_input = torch.cat(
            [current, model.face(maps["face_points"], (H, W)), model.hand(maps["hand_keypoints"], (H, W))], 1
        )

        def attention() -> torch.Tensor:
            p = F.adaptive_avg_pool2d(current, small)
            expanded = F.adaptive_avg_pool2d(model.texture(maps["uv_expanded"], maps["mask_expanded"]), small)
            return model.attention(p, expanded, pooled, (H, W))

        parts = {
            "inputs": lambda: model.prepare_inputs(template, pose, camera, face_points=face),
            "texture": lambda: model.texture(maps["uv"], maps["mask"]),
            "attention": attention,
            "face + hand": lambda: (
                model.face(maps["face_points"], (H, W)),
                model.hand(maps["hand_keypoints"], (H, W)),
            ),
            "renderer": lambda: model.renderer(renderer_input),
            "att + render": lambda: (attention(), model.renderer(renderer_input)),
            "forward": lambda: model({**maps, "previous_features": pooled}),
        }
        count = repeats if size <= 512 else max(3, repeats // 10)
        rows = [(part, *timed(run, device, count)) for part, run in parts.items()]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    report(rows, f"{name}: {H}x{W}, {params:.1f}M parameters, {count} repeats")
    return dict((r[0], r[1]) for r in rows)["renderer"]


def bench_styleavatar(size: int, in_channels: int, device: torch.device, repeats: int) -> float:
    """Wall ms of a StyleUNet with StyleAvatar's widths for a size^2 input."""
    widths = [STYLEAVATAR_CHANNELS[size >> (k + 1)] for k in range(int(math.log2(size)) - 3)]
    net = StyleUNet(in_channels, 4, widths, style_dim=512, decoder_convs=2).to(device).eval()
    x = torch.randn(1, in_channels, size, size, device=device)
    with torch.no_grad():
        wall, cpu = timed(lambda: net(x), device, max(3, repeats // 5))
    report([("renderer", wall, cpu)], f"StyleAvatar-width StyleUNet at {size}x{size}: widths {widths}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["rt-256", "hq-512"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, batch 1")
    template = load_template("anny", device=device)
    ours = {name: bench_config(name, template, device, args.repeats) for name in args.configs}
    if "rt-256" in ours:
        theirs = bench_styleavatar(256, 80, device, args.repeats)
        print(f"\nStyleAvatar-width / rt-256 renderer time at 256x256: {theirs / ours['rt-256']:.1f}x")


if __name__ == "__main__":
    main()
