"""Rasterizer benchmark: median milliseconds per frame for the posed default body template.

    python benchmarks/raster.py [--repeats 20] [--device cpu|cuda] [--mesh template|sphere]

Prints the machine, then the template forward (pose -> vertices and normals) and, per
resolution, the cost of ``rasterize`` and of the full ``render_maps`` (rasterize + UV and
canonical maps), both without autograd. On the CPU also ``rasterize`` with the vectorised
z-buffer the GPU uses instead of the compiled CPU loop, timed in the same run, and the ratio.
``--mesh sphere`` swaps in a synthetic 27,380-triangle sphere.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

from ram_avatar.device import device_name
from ram_avatar.render import Camera, rasterize, rasterizer, render_maps

RESOLUTIONS = (256, 512, 1024)


def median_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``run`` in milliseconds, synchronising CUDA around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def sphere(device: torch.device, rings: int = 106, segments: int = 130) -> dict[str, torch.Tensor]:
    """A body-sized UV sphere (2 * segments * (rings - 1) triangles) with the template's fields."""
    theta = torch.linspace(0, math.pi, rings + 1, device=device)[1:-1]  # poles added below
    phi = torch.linspace(0, 2 * math.pi, segments + 1, device=device)[:-1]
    ring = torch.stack(torch.meshgrid(theta, phi, indexing="ij"), -1).reshape(-1, 2)
    polar, azimuth = ring.unbind(1)
    directions = torch.stack([polar.sin() * azimuth.cos(), polar.cos(), polar.sin() * azimuth.sin()], -1)
    directions = torch.cat([directions, torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], device=device)])
    grid = torch.arange((rings - 1) * segments, device=device).view(rings - 1, segments)
    a, b = grid[:-1], grid[:-1].roll(-1, 1)
    c, d = grid[1:], grid[1:].roll(-1, 1)
    north, south = torch.full_like(grid[0], len(directions) - 2), torch.full_like(grid[0], len(directions) - 1)
    faces = torch.cat(
        [
            torch.stack([a, c, d], -1).view(-1, 3),
            torch.stack([a, d, b], -1).view(-1, 3),
            torch.stack([north, grid[0], grid[0].roll(-1)], -1),
            torch.stack([south, grid[-1].roll(-1), grid[-1]], -1),
        ]
    )
    longitude = torch.atan2(directions[:, 2], directions[:, 0]) / (2 * math.pi) + 0.5
    uvs = torch.stack([longitude, directions[:, 1] / 2 + 0.5], -1)
    return {
        "vertices": (directions * 0.85)[None],
        "faces": faces,
        "uvs": uvs,
        "uv_faces": faces,
        "canonical": directions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed frames per row, after 3 warm-ups")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mesh", choices=("template", "sphere"), default="template")
    args = parser.parse_args()
    device = torch.device(args.device)

    print(f"cpu     {device_name('cpu')} ({os.cpu_count()} cores)")
    if device.type == "cuda":
        print(f"gpu     {torch.cuda.get_device_name(device)}")
    print(f"torch   {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    with torch.no_grad():
        if args.mesh == "template":
            from ram_avatar.body import SmplxPose, load_template

            template = load_template("anny", device=device)
            pose = SmplxPose.zeros(1, device=device)
            mesh = {name: getattr(template, name) for name in ("faces", "uvs", "uv_faces", "canonical")}
            mesh["vertices"] = template(pose).vertices
            print(f"mesh    anny template: {template.num_vertices} vertices, {len(template.faces)} triangles")
            print(f"template forward  {median_ms(lambda: template(pose), device, args.repeats):7.2f} ms")
        else:
            mesh = sphere(device)
            print(f"mesh    sphere: {mesh['vertices'].shape[1]} vertices, {len(mesh['faces'])} triangles")

        cpu = device.type == "cpu"
        print("   res  rasterize  render_maps" + ("  vectorised  ratio" if cpu else ""))
        for resolution in RESOLUTIONS:
            camera = Camera.framing(mesh["vertices"], (resolution, resolution))

            def frame(camera: Camera = camera):
                return rasterize(mesh["vertices"], mesh["faces"], camera)

            raster = median_ms(frame, device, args.repeats)
            maps = median_ms(lambda camera=camera: render_maps(**mesh, camera=camera), device, args.repeats)
            row = f"{resolution:6d} {raster:7.2f} ms {maps:9.2f} ms"
            if cpu:
                rasterizer.COMPILED_CPU_ZBUFFER = False
                vectorised = median_ms(frame, device, args.repeats)
                rasterizer.COMPILED_CPU_ZBUFFER = True
                row += f" {vectorised:8.2f} ms {vectorised / raster:5.1f}x"
            print(row)


if __name__ == "__main__":
    main()
