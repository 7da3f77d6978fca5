"""Do the bundled motions keep their gestures through retargeting and MDA on the example avatar?

Prints two tables for the BVH motions in examples/motions (and ../shared/data/mocap if present),
all at the decoder's frame rate (the BVH's own frames: the nearest one in time):

1. Retargeting, no MDA. The right wrist's height above the right shoulder, frame by frame, in
   units of the arm's length (shoulder -> elbow -> wrist at rest; body sizes differ), from the
   BVH's own forward kinematics and from the retargeted poses posed on the avatar's body
   template (strength 0): frames with the wrist above the shoulder in each and in both, the
   highest (also in cm on the template, and in cm for the BVH scaled to the template's legs), and
   the mean difference.
2. MDA, per motion and strength: the OOD score (median / max over frames) before -> after, the
   mean change (deg / joint), the right wrist above the right shoulder (% of frames, highest in
   cm) and above the head (for the dab's raised arm), and how much of the motion is kept: the
   correlation of the summed joint angular speed with the driving motion's, and of the right
   wrist's height curve with strength 0's. Then the strongest strength that keeps every motion's
   rhythm (joint-speed correlation >= --min-rhythm): how ``DEFAULT_STRENGTH`` was chosen.

    python benchmarks/wave_fidelity.py                       # ~1-2 min on 2 CPU cores
    python benchmarks/wave_fidelity.py --strengths 0 0.5 1 --ood-range 3.5 5.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ram_avatar.body.layout import JOINT_NAMES, SmplxPose
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.mda.align import OOD_RANGE, align
from ram_avatar.motion import find_motion_files
from ram_avatar.motion.bvh import joint_positions, map_joints, read_bvh
from ram_avatar.pipelines import RamAvatarPipeline
from ram_avatar.rotations import angle_between_aa

ROOT = Path(__file__).resolve().parents[1]
MOCAP = ROOT.parent / "shared" / "data" / "mocap"
J = {name: i for i, name in enumerate(JOINT_NAMES)}


def joint_speed(body_pose: torch.Tensor) -> torch.Tensor:
    """Summed angular speed of the 21 body joints, degrees per frame: (T, 21, 3) -> (T - 1,)."""
    return angle_between_aa(body_pose[1:], body_pose[:-1]).sum(-1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def arm_length(joints: torch.Tensor, side: str = "right") -> float:
    """Shoulder -> elbow -> wrist length of one frame's joints (J, 3)."""
    shoulder, elbow, wrist = (joints[J[f"{side}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
    return float((elbow - shoulder).norm() + (wrist - elbow).norm())


@torch.no_grad()
def posed_joints(pipe: RamAvatarPipeline, pose: SmplxPose, chunk: int = 128) -> torch.Tensor:
    """Joints (T, 55, 3) of the avatar's body template posed as ``pose``."""
    shape = pipe.shape[None].to(pipe.device)
    return torch.cat(
        [
            pipe.template(pose[i : i + chunk].to(pipe.device), shape).joints.cpu()
            for i in range(0, pose.batch_size, chunk)
        ]
    )


def bvh_heights(path: Path, fps: float, frames: int) -> tuple[torch.Tensor, float]:
    """The BVH's right wrist height above its right shoulder (frames,), in arm lengths, at
    ``fps`` (nearest frame), and its arm length in metres (scaled like the root motion)."""
    bvh = read_bvh(path)
    mapping = map_joints(bvh)
    positions = joint_positions(bvh)
    index = (torch.arange(frames) / fps / bvh.frame_time).round().long().clamp(max=len(positions) - 1)
    shoulder, elbow, wrist = (mapping[f"right_{j}"] for j in ("shoulder", "elbow", "wrist"))
    rest = positions[0]
    length = float((rest[elbow] - rest[shoulder]).norm() + (rest[wrist] - rest[elbow]).norm())
    return (positions[index, wrist, 1] - positions[index, shoulder, 1]) / length, length


def wrist_heights(joints: torch.Tensor, length: float) -> torch.Tensor:
    """Right wrist height above the right shoulder (T,), in arm lengths."""
    return (joints[:, J["right_wrist"], 1] - joints[:, J["right_shoulder"], 1]) / length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--avatar", default=str(ROOT / "examples" / "avatars" / "dancer-rt256"))
    parser.add_argument("--mocap", type=Path, default=MOCAP, help="more BVHs (skipped when absent)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--ood-range", type=float, nargs=2, default=list(OOD_RANGE), help="align's ood_range")
    parser.add_argument("--min-rhythm", type=float, default=0.95, help="joint-speed correlation a strength must keep")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    pipe = RamAvatarPipeline.from_pretrained(args.avatar, device="cpu")
    if not pipe.has_mda:
        raise SystemExit(f"{args.avatar} has no MDA decoder")
    motions = sorted((ROOT / "examples" / "motions").glob("*.bvh"))
    if args.mocap.is_dir():
        bundled = {p.stem for p in motions}
        shared = [p for p in find_motion_files(args.mocap) if p.suffix == ".bvh"]
        motions += [p for p in shared if not any(b in p.stem for b in bundled)]  # the bundled ones are copies
    drivings = {p: pipe.load_driving(p, progress=False) for p in motions}
    rest = posed_joints(pipe, SmplxPose.zeros(1))[0]
    length = arm_length(rest)
    print(
        f"avatar {pipe.name}: right arm {100 * length:.1f} cm (shoulder -> elbow -> wrist); MDA at "
        f"{pipe.decoder.fps:g} fps, "
        f"ood_range {tuple(args.ood_range)}, DEFAULT_STRENGTH {DEFAULT_STRENGTH:g}\n"
    )

    print("1. Retargeting (strength 0) against the BVH's own forward kinematics: right wrist above the right shoulder")
    print(
        "| motion | frames | above in BVH | above on template | in both | highest BVH (arm / cm*) | "
        "highest template (arm / cm) | mean abs diff (arm) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    still = {}
    for path, driving in drivings.items():
        frames = driving.pose.batch_size
        file, file_length = bvh_heights(path, driving.fps, frames)
        ours = wrist_heights(posed_joints(pipe, driving.pose), length)
        still[path] = ours
        print(
            f"| {path.stem} | {frames} | {int((file > 0).sum())} | {int((ours > 0).sum())} | "
            f"{int(((file > 0) & (ours > 0)).sum())} | {file.max():.3f} / {100 * file.max() * file_length:.1f} | "
            f"{ours.max():.3f} / {100 * ours.max() * length:.1f} | {(file - ours).abs().mean():.4f} |"
        )
    print("* the BVH scaled to the template's leg length, as its root motion is\n")

    print("2. MDA by strength")
    print(
        "| motion | strength | OOD median before -> after | OOD max before -> after | change (deg/joint) | "
        "R wrist above R shoulder (% frames / max cm) | R wrist above head (% frames) | joint-speed corr. | "
        "wrist-height corr. |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    worst_rhythm = dict.fromkeys(args.strengths, 1.0)  # strength -> lowest joint-speed correlation over the motions
    for path, driving in drivings.items():
        speed = joint_speed(driving.pose.body_pose)
        for strength in args.strengths:
            result = align(driving.pose, pipe.prior, pipe.decoder, strength, ood_range=tuple(args.ood_range))
            joints = posed_joints(pipe, result.pose)
            heights = wrist_heights(joints, length)
            above_head = (joints[:, J["right_wrist"], 1] > joints[:, J["head"], 1]).float().mean()
            rhythm = correlation(speed, joint_speed(result.pose.body_pose)) if strength else 1.0
            kept = correlation(still[path], heights) if strength else 1.0
            worst_rhythm[strength] = min(worst_rhythm[strength], rhythm)
            print(
                f"| {path.stem} | {strength:g} | {result.ood_before.median():.2f} -> {result.ood_after.median():.2f} | "
                f"{result.ood_before.max():.2f} -> {result.ood_after.max():.2f} | {result.change_deg.mean():.1f} | "
                f"{100 * (heights > 0).float().mean():.1f} / {100 * heights.max() * length:.1f} | "
                f"{100 * above_head:.1f} | "
                f"{rhythm:.2f} | {kept:.2f} |"
            )
    keeping = [s for s, r in worst_rhythm.items() if r >= args.min_rhythm]
    print(
        f"\nstrongest strength that keeps every motion's rhythm (joint-speed corr. >= {args.min_rhythm:g}): "
        f"{max(keeping) if keeping else 'none'}; DEFAULT_STRENGTH = {DEFAULT_STRENGTH:g}"
    )
    wave = next((d for p, d in drivings.items() if p.stem == "wave_hello"), None)
    if wave is not None:
        result = align(wave.pose, pipe.prior, pipe.decoder, ood_range=tuple(args.ood_range))
        heights = wrist_heights(posed_joints(pipe, result.pose), length)
        print(
            f"wave_hello at the default strength ({DEFAULT_STRENGTH:g}): right wrist above the shoulder in "
            f"{100 * (heights > 0).float().mean():.1f} % of {len(heights)} frames, "
            f"by up to {100 * heights.max() * length:.1f} cm"
        )


if __name__ == "__main__":
    main()
