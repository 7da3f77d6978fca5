"""Animation speed per stage and end to end, eager vs the fast path, per named config.

    python benchmarks/animate.py [--configs rt-256 hq-512] [--all] [--repeats 15] [--threads N]
                                 [--device cpu|cuda]

Batch 1, eval mode, untrained networks (speed does not depend on the weights; MDA uses a default-
size pose prior + subject decoder), the Anny body in an arms-down pose with a flat face mesh over
the head (``render_speed.scene``), framed at each config's size. Stages, per frame:

    mda           Motion Distribution Align of one frame (prior encode, decoder, slerp)
    template      posing the body template (skinning, normals)
    inputs        prepare_inputs: the template pass + rasterizing body and expanded body + hands
    texture       neural texture sampling of the posed and expanded body
    attention     pooling + dual attention (given the sampled features)
    face + hand   drawing the face mesh and hand skeletons + their U-Nets (fast: windowed)
    renderer      the StyleUNet (eager: modulated convs; fast: folded)
    forward       the avatar's forward (texture .. renderer)
    encode        RGBA -> uint8 frame -> H.264 (libx264, as the animation pipeline writes)
    end-to-end    all of the above in sequence, one frame, streaming (previous frame's features)
    chunk of 16   the same for 16 frames, prepared as one batch and rendered in batches as
                  ``ram-avatar animate`` does (16 at 256^2, 4 at 512^2; table: per chunk;
                  summary: per frame); median of 3
    2 chunks      on a CPU with 2+ threads: two such chunks at once on two threads, each on
                  half of torch's threads, as a stream renders there (fast path only; table:
                  per 2 chunks); median of 3

The chunk rows run at 256^2 and below unless ``--all`` (at 512^2 eager takes ~12 s a chunk);
with default arguments the whole script takes about a minute on 2 CPU cores.

The fast path's stages are its own: texture = the crop around the body (+ the expanded body);
attention = pooling + the attention at its own size (the fast path never upsamples it);
face + hand = drawing and U-Nets in windows only; renderer = the stem summed from its parts
(texture crop, separable attention term, face / hand windows) + the rest of the network.

Every stage of the fast path that differs from eager is timed on the same input in the same
process, so the ratios hold even when other programs share the cores (absolute times swing, so
medians are printed, with process CPU time per frame beside wall time). paper-1024 only with
``--all`` on a CPU. The last table times a StyleUNet of StyleAvatar's widths at 256^2 (the
paper's renderer) against rt-256's, eager and fast.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from render_speed import STYLEAVATAR_CHANNELS, scene, timed

from ram_avatar.body import load_template
from ram_avatar.device import device_name, keep_freed_memory, split_threads
from ram_avatar.mda.align import align
from ram_avatar.models import PoseVAE, RamAvatar, StyleUNet, SubjectPoseDecoder, config_image_size
from ram_avatar.models.avatar import encode_parts
from ram_avatar.models.dual_attention import attention_size
from ram_avatar.models.fast import body_boxes, face_windows, hand_windows, optimize_for_inference
from ram_avatar.pipelines.ram_avatar_pipeline import composite, render_batch, stream_workers
from ram_avatar.pipelines.video import VideoWriter

CHUNK = 16  # frames the animation pipeline prepares and renders as one batch


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, else the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Encoder:
    """The pipeline's video writer and compositing; ``write`` encodes RGBA frames as it does."""

    def __init__(self, folder: str, device: torch.device):
        self.writer = VideoWriter(Path(folder) / "bench.mp4", 30, threads=1 if device.type == "cpu" else None)
        self.white = torch.ones(1, 3, 1, 1, device=device)

    def write(self, rgb: torch.Tensor, alpha: torch.Tensor) -> None:
        for frame in composite(rgb, alpha, self.white):
            self.writer.write(frame)

    def close(self) -> None:
        self.writer.close()


def paired(
    first: Callable[[], object], second: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2
) -> tuple[float, ...]:
    """(wall, CPU, wall, CPU) median ms of two runs timed alternately, so that load changes on a
    shared machine hit both alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[list[tuple[float, float]]] = [[], []]
    for i in range(repeats + warmup):
        for slot, run in enumerate((first, second)):
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            sync()
            if i >= warmup:
                times[slot].append((time.perf_counter() - start, time.process_time() - start_cpu))
    return tuple(statistics.median(t[k] for t in slot) * 1e3 for slot in times for k in (0, 1))


def stage_table(title: str, rows: list[tuple[str, float, float, float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'stage':<13}{'eager ms':>10}{'CPU ms':>9}{'fast ms':>10}{'CPU ms':>9}{'speed-up':>10}")
    for name, ew, ec, fw, fc in rows:
        eager = f"{ew:>10.1f}{ec:>9.1f}" if ew else f"{'(fast only)':>19}"
        fast = (
            f"{fw:>10.1f}{fc:>9.1f}" + (f"{ew / fw:>9.2f}x" if ew else "") if fw else f"{'(same)':>10}{'':>9}{'':>10}"
        )
        print(f"{name:<13}{eager}{fast}")


def bench_config(name: str, template, mda, device: torch.device, repeats: int, folder: str, chunks: bool) -> list[str]:  # noqa: ANN001
    """Print the stage table of one config (``chunks``: with the chunk rows); return its summary rows."""
    size = config_image_size(name)
    model = RamAvatar.from_config_name(name).to(device).eval()
    fast = optimize_for_inference(model)
    pose, camera, face = scene(template, size, device)
    count = repeats if size <= 256 else max(3, repeats // 5)  # larger sizes: fewer, to stay near a minute
    prior, decoder = mda
    H = W = size
    small = attention_size(H, W, model.attention_downsample)
    encoder = Encoder(folder, device)
    with torch.inference_mode():
        maps = model.prepare_inputs(template, pose, camera, face_points=face)
        first = model(maps)
        streaming = {**maps, "previous_features": first["features"]}
        x = torch.cat([model.texture(maps["uv"], maps["mask"]), *encode_parts(maps, model.face, model.hand)], 1)
        current = model.texture(maps["uv"], maps["mask"])
        pairs = [(maps["uv"], maps["mask"]), (maps["uv_expanded"], maps["mask_expanded"])]
        boxes = body_boxes(maps["mask"], math.lcm(model.attention_downsample, 2))
        crop = fast.sample(maps["uv"], maps["mask"], boxes)
        expanded = fast.sample(maps["uv_expanded"], maps["mask_expanded"])[..., 1:-2, 1:-2]
        low = fast.attention.low_res(fast.pool(crop, boxes[0], (H, W), small), expanded, first["features"])

        def attention(sampled: torch.Tensor) -> torch.Tensor:
            pooled = F.adaptive_avg_pool2d(sampled, small)
            return model.attention(pooled, pooled, first["features"], (H, W))

        def fast_attention() -> torch.Tensor:
            return fast.attention.low_res(fast.pool(crop, boxes[0], (H, W), small), expanded, first["features"])

        def fast_parts() -> None:
            face_windows(fast.face, maps["face_points"], (H, W))
            hand_windows(fast.hand, maps["hand_keypoints"], (H, W))

        def fast_renderer() -> torch.Tensor:  # the stem summed from its parts (incl. face / hand windows)
            return fast.renderer.from_stem(fast.stem(crop, boxes[0], low, maps, (H, W)), (H, W))

        def end_to_end(net, frames: int = 1, rendered: list | None = None) -> None:  # noqa: ANN001
            """MDA .. encoding of ``frames`` frames; with ``rendered``, RGBA is kept there, not encoded."""
            poses = pose[[0] * frames]
            aligned = align(poses, prior, decoder, 1.0, former_latent=None).pose
            m = net.prepare_inputs(template, aligned, camera, face_points=face.expand(frames, -1, -1))
            previous = first["features"]
            batch = render_batch((H, W)) if frames > 1 else 1  # as the pipeline splits a chunk
            for start in range(0, frames, batch):  # previous_features (1, C, h, w): a stream's frames
                out = net({**{k: v[start : start + batch] for k, v in m.items()}, "previous_features": previous})
                previous = out["features"][-1:]
                if rendered is not None:
                    rendered.append((out["rgb"], out["alpha"]))
                    continue
                for i in range(len(out["rgb"])):
                    encoder.write(out["rgb"][i : i + 1], out["alpha"][i : i + 1])

        def chunks_at_once(net) -> None:  # noqa: ANN001
            # As a stream on a CPU (stream_workers): two chunks on two threads, each on half of
            # torch's threads; the calling thread encodes (here after, in the pipeline meanwhile).
            rendered: list[list] = [[], []]

            @torch.inference_mode()  # per thread
            def render(out: list) -> None:
                end_to_end(net, CHUNK, out)

            with split_threads(2), ThreadPoolExecutor(2) as pool:
                list(pool.map(render, rendered))
            for rgb, alpha in (pair for out in rendered for pair in out):
                encoder.write(rgb, alpha)

        same = [
            ("mda", lambda: align(pose, prior, decoder, 1.0), None),
            ("template", lambda: template(pose), None),
            ("inputs", lambda: model.prepare_inputs(template, pose, camera, face_points=face), None),
            (
                "texture",
                lambda: model.texture.sample(pairs),
                lambda: (fast.sample(maps["uv"], maps["mask"], boxes), expanded),
            ),
            ("attention", lambda: attention(current), fast_attention),
            ("face + hand", lambda: encode_parts(maps, model.face, model.hand), fast_parts),
            ("renderer", lambda: model.renderer(x), fast_renderer),
            ("forward", lambda: model(streaming), lambda: fast(streaming)),
            ("encode", lambda: encoder.write(first["rgb"], first["alpha"]), None),
            ("end-to-end", lambda: end_to_end(model), lambda: end_to_end(fast)),
        ]
        rows = []
        for stage, eager_run, fast_run in same:
            if fast_run is None:
                rows.append((stage, *timed(eager_run, device, count), 0.0, 0.0))
            else:
                rows.append((stage, *paired(eager_run, fast_run, device, count)))
        if chunks:  # 16 or 32 frames a call: a few calls suffice
            rows.append(
                (
                    f"chunk of {CHUNK}",
                    *paired(lambda: end_to_end(model, CHUNK), lambda: end_to_end(fast, CHUNK), device, 3, 1),
                )
            )
            if stream_workers(device) == 2:  # what a stream does on a CPU (the fast path by default)
                rows.append(("2 chunks", 0.0, 0.0, *timed(lambda: chunks_at_once(fast), device, 3, 1)))
    encoder.close()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    stage_table(
        f"{name}: {H}x{W}, {params:.1f}M parameters, median of {count}, peak memory {peak_memory_mb(device):.0f} MB",
        rows,
    )
    summary = []
    labels = {
        "end-to-end": (1, "end-to-end, one frame at a time"),
        f"chunk of {CHUNK}": (CHUNK, f"in chunks of {CHUNK}, one at a time (as `ram-avatar animate` on a GPU)"),
        "2 chunks": (2 * CHUNK, f"in chunks of {CHUNK}, two at once (as `ram-avatar animate` on a CPU)"),
    }
    for stage, ew, ec, fw, fc in (row for row in rows if row[0] in labels):
        per, label = labels[stage]  # per frame
        summary += [
            f"{name:<11} {path} {wall / per:7.1f} ms {1000 * per / wall:6.1f} FPS (CPU {cpu / per:6.1f} ms)  {label}"
            for path, wall, cpu in (("eager", ew, ec), ("fast ", fw, fc))
            if wall
        ]
    return summary


def bench_styleavatar(device: torch.device, repeats: int) -> None:
    """StyleAvatar-width StyleUNet vs rt-256's renderer at 256^2, same input, same process."""
    size, in_channels = 256, 80
    widths = [STYLEAVATAR_CHANNELS[size >> (k + 1)] for k in range(int(math.log2(size)) - 3)]
    theirs = StyleUNet(in_channels, 4, widths, style_dim=512, decoder_convs=2).to(device).eval()
    ours = optimize_for_inference(RamAvatar.from_config_name("rt-256").to(device))
    eager_ours = RamAvatar.from_config_name("rt-256").to(device).eval().renderer
    x = torch.randn(1, in_channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t_theirs, c_theirs = timed(lambda: theirs(x), device, 3, warmup=1)  # seconds per call on a CPU
        t_eager, c_eager, t_fast, c_fast = paired(lambda: eager_ours(x), lambda: ours.renderer(x), device, repeats)
    print(
        f"\nrenderer at 256x256 (wall ms / CPU ms): StyleAvatar widths {widths}: {t_theirs:.1f} / {c_theirs:.1f}; "
        f"rt-256 eager {t_eager:.1f} / {c_eager:.1f}; rt-256 fast {t_fast:.1f} / {c_fast:.1f}"
    )
    print(
        f"StyleAvatar-width / rt-256 renderer: {t_theirs / t_eager:.1f}x eager, {t_theirs / t_fast:.1f}x fast (wall); "
        f"{c_theirs / c_eager:.1f}x / {c_theirs / c_fast:.1f}x (CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", default=None, help="default: rt-256 hq-512 (+ paper-1024 on CUDA or with --all)"
    )
    parser.add_argument(
        "--all", action="store_true", help="include paper-1024 on a CPU, and chunk rows above 256^2 (minutes)"
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line and the app do
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configs = args.configs or (["rt-256", "hq-512"] + (["paper-1024"] if args.all or device.type == "cuda" else []))
    import os

    print(
        f"{device_name(device)} ({os.cpu_count()} CPUs), {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, device {device}, batch 1"
    )
    template = load_template("anny", device=device)
    mda = (PoseVAE().to(device).eval(), SubjectPoseDecoder().to(device).eval())
    with tempfile.TemporaryDirectory() as folder:
        summary = [
            row
            for name in configs
            for row in bench_config(
                name, template, mda, device, args.repeats, folder, args.all or config_image_size(name) <= 256
            )
        ]
    bench_styleavatar(device, args.repeats)
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
