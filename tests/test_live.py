"""The live loop: a slow renderer makes it drop frames rather than queue them (the renderer always
takes the newest pose), frames come out in order, every way of ending stops both threads; clips
play as if they were cameras; ``ram-avatar live`` turns a missing camera or a missing or bad file
into one line; a real (tiny) avatar renders through the loop into a recording. No timing is
asserted: fake stages sleep so that the renderer is slower than the camera by a wide margin."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_fixture import make_tiny_avatar

from ram_avatar.body.layout import SmplxPose
from ram_avatar.cli import main
from ram_avatar.pipelines.live import BackgroundLive, Captured, ClipSource, LiveLoop, LiveView, Mailbox, PushedFrames
from ram_avatar.pipelines.ram_avatar_pipeline import Driving, RenderedFrame

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"


def stamp(index: int) -> np.ndarray:
    """A tiny camera frame that carries its index."""
    return np.array([[[index % 256, index // 256, 0]]], np.uint8)


class FakeSource:
    """A camera delivering a frame every ``period`` seconds (``count`` of them, or endless)."""

    fps, size, skipped = 100.0, (1, 1), 0

    def __init__(self, count: int | None, period: float = 0.0):
        self.count, self.period, self.closed = count, period, False

    def __iter__(self):
        for index in itertools.count() if self.count is None else range(self.count):
            if self.closed:
                return
            time.sleep(self.period)
            yield Captured(index, time.perf_counter(), stamp(index))

    def close(self) -> None:
        self.closed = True


class FakeSession:
    """Instant detection and solve (the pose's x translation carries the frame index; frames in
    ``unseen`` have nobody in them); align and draw take ``draw_seconds`` and note, per pose,
    the newest frame solved by the time the renderer took it."""

    def __init__(self, draw_seconds: float = 0.0, unseen: tuple[int, ...] = (), fail_at: int | None = None):
        self.draw_seconds, self.unseen, self.fail_at = draw_seconds, unseen, fail_at
        self.newest = -1
        self.taken: list[tuple[int, int]] = []  # (frame rendered, newest solved then)

    def detect(self, frame: np.ndarray) -> int:
        index = int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])
        if index == self.fail_at:
            raise ValueError("the detector broke")
        return index

    def solve(self, detection: int, timestamp: float) -> Driving | None:
        self.newest = detection
        if detection in self.unseen:
            return None
        pose = SmplxPose.zeros(1)
        pose.transl[0, 0] = detection
        return Driving(pose, 30.0, "fake")

    def align(self, driving: Driving) -> tuple[Driving, dict]:
        self.taken.append((int(driving.pose.transl[0, 0]), self.newest))
        return driving, {}

    def draw(self, driving: Driving, mda: dict | None = None) -> RenderedFrame:
        time.sleep(self.draw_seconds)
        return RenderedFrame(int(driving.pose.transl[0, 0]), np.zeros((4, 4, 3), np.uint8), None, None, None)


class Collect:
    """A sink keeping each frame's index; stops the loop (False) or raises after ``stop_after``."""

    def __init__(self, stop_after: int | None = None, raise_: type[BaseException] | None = None):
        self.indices, self.avatars, self.stop_after, self.raise_ = [], [], stop_after, raise_

    def __call__(self, frame) -> bool:
        self.indices.append(frame.index)
        self.avatars.append(frame.avatar)
        if self.stop_after is not None and len(self.indices) >= self.stop_after:
            if self.raise_ is not None:
                raise self.raise_()
            return False
        return True


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ram-avatar-live-detect"]


def test_mailbox_keeps_only_the_newest_item():
    box: Mailbox[int] = Mailbox()
    for item in range(4):
        box.put(item)
    assert box.take() == 3 and box.dropped == 3
    box.put(7)
    box.close()
    assert box.take() == 7 and box.take() is None  # what was posted before closing is still delivered


def test_a_slow_renderer_drops_frames_and_always_takes_the_newest_pose():
    """The camera delivers a frame every 5 ms, the renderer takes 40 ms a frame: a queue would fall
    further and further behind; the mailbox hands the renderer the newest pose each time."""
    session, sink = FakeSession(draw_seconds=0.04), Collect()
    stats = LiveLoop(FakeSource(60, period=0.005), session, sink).run()
    out = sink.indices
    assert out == sorted(set(out)) and set(out) <= set(range(60))  # a subsequence of the camera's frames, in order
    assert out[-1] == 59  # the newest pose at the end is rendered, not lost
    assert stats.dropped > 0 and stats.rendered == len(out) < 60
    assert stats.frames == 60 and stats.rendered + stats.dropped == 60  # every frame rendered or dropped, none waiting
    assert all(newest - taken <= 1 for taken, newest in session.taken), session.taken
    assert len(stats.latency) == len(stats.stages["mda"]) == len(stats.stages["render"]) == stats.rendered
    assert len(stats.stages["detect"]) == len(stats.stages["solve"]) == 60
    assert not loop_threads()


def test_frames_without_a_person_pass_through_in_order():
    unseen = (3, 4, 10)
    sink = Collect()
    stats = LiveLoop(FakeSource(20, period=0.002), FakeSession(unseen=unseen), sink).run()
    assert sink.indices == sorted(set(sink.indices))
    assert stats.unseen == len(unseen)
    for index, avatar in zip(sink.indices, sink.avatars):
        assert (avatar is None) == (index in unseen)
        assert avatar is None or avatar.index == index


def test_the_loop_stops_when_the_sink_says_so_on_an_endless_camera():
    source, sink = FakeSource(None, period=0.002), Collect(stop_after=5)
    stats = LiveLoop(source, FakeSession(draw_seconds=0.01), sink).run()
    assert len(sink.indices) == 5 and stats.rendered == 5 and not stats.interrupted
    assert source.closed and not loop_threads()


def test_ctrl_c_stops_the_loop_cleanly():
    source, sink = FakeSource(None, period=0.002), Collect(stop_after=3, raise_=KeyboardInterrupt)
    stats = LiveLoop(source, FakeSession(), sink).run()
    assert stats.interrupted and len(sink.indices) == 3
    assert source.closed and not loop_threads()


def test_an_error_on_the_detection_thread_stops_the_loop_and_is_raised():
    source = FakeSource(None, period=0.002)
    with pytest.raises(ValueError, match="the detector broke"):
        LiveLoop(source, FakeSession(fail_at=8), Collect()).run()
    assert source.closed and not loop_threads()


def test_max_frames_ends_the_run():
    stats = LiveLoop(FakeSource(None), FakeSession(), Collect(), max_frames=12).run()
    assert stats.frames == 12 and not loop_threads()


class PushedSession(FakeSession):
    """A :class:`FakeSession` that notes its warm-up and closing; with ``gate``, drawing waits for it."""

    def __init__(self, *args, gate: threading.Event | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate, self.warmed, self.closed = gate, None, False

    def warm_up(self, image_size: tuple[int, int]) -> None:
        assert self.newest == -1  # before any frame
        self.warmed = image_size

    def draw(self, driving: Driving, mda: dict | None = None) -> RenderedFrame:
        if self.gate is not None:
            self.gate.wait()
        return super().draw(driving, mda)

    def close(self) -> None:
        self.closed = True


def background_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("ram-avatar-live-detect", "ram-avatar-live-background")]


def until(condition, seconds: float = 30.0) -> None:
    """Wait for ``condition()`` (generously: a deadlock fails, a slow machine does not)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.005)


def test_pushed_frames_keep_only_the_newest_frame():
    source = PushedFrames(fps=10.0)
    for index in range(3):
        source.push(stamp(index), timestamp=float(index))
    source.close()
    source.push(stamp(9))  # after closing: dropped
    frames = list(source)
    assert [(f.index, f.time, int(f.image[0, 0, 0])) for f in frames] == [(2, 2.0, 2)]
    assert source.skipped == 2 and source.size == (1, 1)


def test_background_live_answers_pushes_at_once_with_the_newest_avatar_frame():
    """While the renderer is stuck, pushes still return (nothing rendered yet: None); once it runs,
    each push returns the newest avatar frame, frames come out in order and those the renderer had
    no time for are dropped."""
    gate = threading.Event()
    session = PushedSession(draw_seconds=0.03, gate=gate)
    live = BackgroundLive(session, warm_up=(1, 1))
    assert [live.push(stamp(index)) for index in range(5)] == [None] * 5  # the renderer is stuck on a frame
    gate.set()
    returned = []
    for index in range(5, 60):
        time.sleep(0.005)
        frame = live.push(stamp(index))
        returned.append(-1 if frame is None else frame.index)
    until(lambda: session.taken and session.taken[-1][0] == 59)
    live.close()
    assert session.warmed == (1, 1) and session.closed and not background_threads()
    rendered = [taken for taken, _ in session.taken]
    assert rendered == sorted(set(rendered)) and rendered[-1] == 59 and len(rendered) < 60  # in order, some dropped
    assert returned == sorted(returned) and set(returned) <= {-1, *rendered}  # each push: the newest rendered so far
    assert live.latest.index == 59 and live.stats.rendered == len(rendered)
    assert live.stats.dropped + live.source.skipped > 0


def test_background_live_raises_the_loops_error_on_the_next_push_and_closes():
    session = PushedSession(fail_at=3)
    live = BackgroundLive(session)
    with pytest.raises(ValueError, match="the detector broke"):
        for _ in range(6000):  # the broken frame, until the loop's error comes back
            live.push(stamp(3))
            time.sleep(0.005)
    assert session.closed and not background_threads()
    with pytest.raises(RuntimeError, match="closed"):
        live.push(stamp(4))


def test_background_live_closes_its_threads_and_session():
    session = PushedSession()
    live = BackgroundLive(session)
    live.push(stamp(0))
    until(lambda: live.latest is not None)
    live.close()
    live.close()  # twice: nothing more to do
    assert session.closed and not background_threads() and session.taken == [(0, 0)]
    with pytest.raises(RuntimeError, match="closed"):
        live.push(stamp(1))


def write_clip(path: Path, frames: int = 30, fps: float = 30.0, size: tuple[int, int] = (96, 128)) -> Path:
    """A clip whose frame i is flat grey at level 8 * i."""
    from ram_avatar.pipelines.video import VideoWriter

    with VideoWriter(path, fps) as writer:
        for index in range(frames):
            writer.write(np.full((*size, 3), 8 * index, np.uint8))
    return path


def test_a_clip_plays_every_frame_in_order_when_not_in_real_time(tmp_path):
    source = ClipSource(write_clip(tmp_path / "clip.mp4"), max_side=64, realtime=False)
    frames = list(source)
    assert [f.index for f in frames] == list(range(30)) and source.skipped == 0
    assert frames[0].image.shape == (48, 64, 3)
    levels = [float(f.image.mean()) for f in frames]
    assert np.allclose(levels, 8 * np.arange(30), atol=3)  # the frames themselves, in order


def test_a_clip_played_as_a_camera_skips_the_frames_whose_time_has_passed(tmp_path):
    """A reader taking 0.1 s a frame of a 30 fps clip gets about every third frame, as from a camera."""
    source = ClipSource(write_clip(tmp_path / "clip.mp4"), max_side=64)
    delivered = []
    for frame in source:
        delivered.append(frame.index)
        time.sleep(0.1)
    assert delivered == sorted(set(delivered)) and delivered[0] == 0
    assert source.skipped > 0 and len(delivered) + source.skipped == 30


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("case", ["camera", "missing", "bad"])
def test_the_cli_says_in_one_line_when_the_source_cannot_be_opened(case, tmp_path, capfd):
    """Checked before the avatar loads; OpenCV's own warnings (printed by its C++ code) are kept quiet."""
    if case == "camera" and Path("/dev/video9").exists():
        pytest.skip("this machine has a camera at index 9")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    source = {"camera": "9", "missing": str(tmp_path / "absent.mp4"), "bad": str(bad)}[case]
    assert main(["live", str(EXAMPLE), "--source", source, "--no-window"]) == 2
    captured = capfd.readouterr()
    line = one_line(captured.err)
    assert line.startswith("ram-avatar live: error: ") and not captured.out
    assert {"camera": "cannot open camera 9", "missing": "not found", "bad": "cannot be read as a video"}[case] in line


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, anny_template):
    from ram_avatar.pipelines import RamAvatarPipeline

    folder = make_tiny_avatar(tmp_path_factory.mktemp("avatar"), anny_template)
    return RamAvatarPipeline.from_pretrained(folder, device="cpu")


def test_the_avatar_renders_through_the_loop_into_a_recording(tiny, tmp_path):
    """A real session (the tiny avatar, MDA on) with detection and solve replaced by the clip's
    frame index -> a pose raising the left arm: every frame of the recording is there (frames not
    rendered hold the last one) and the avatar moves."""
    import imageio.v3 as iio

    from ram_avatar.pipelines.live import LiveSession

    source = ClipSource(write_clip(tmp_path / "clip.mp4"), max_side=64, realtime=False)
    session = LiveSession(tiny, mda_strength=0.5)
    session.warm_up(source.size)
    assert session.count == 0 and session.state is None and session.image_size == (48, 64)
    arm = torch.linspace(-1.2, 0.2, 30)

    def solve(detection, timestamp):
        pose = SmplxPose.zeros(1)
        pose.body_pose[0, 15, 2] = arm[detection]
        pose.body_pose[0, 16, 2] = 1.2
        return Driving(pose, tiny.fps, "arm")

    session.detect = lambda frame: min(29, round(float(frame.mean()) / 8))
    session.solve = solve
    view = LiveView(tiny.image_size, out=tmp_path / "live.mp4", fps=source.fps)
    sink = Collect()

    def record(frame):
        sink(frame)
        return view(frame)

    stats = LiveLoop(source, session, record).run()
    video = iio.imread(view.close(), plugin="pyav")
    session.close()
    assert stats.rendered == session.count == len(sink.indices) and stats.stages["mda"]
    assert video.shape == (sink.indices[-1] - sink.indices[0] + 1, 48, 64 + 48, 3)
    avatar = video[..., 64:, :].astype(int)
    assert (avatar < 200).any(-1).mean(axis=(1, 2)).min() > 0.02  # the body is on every frame
    assert np.abs(avatar[0] - avatar[-1]).max() > 40  # ... and it moved


def test_a_camera_that_changes_its_frame_size_keeps_working(tiny, shared_data):
    """The app's webcam may change resolution between frames; MediaPipe's mask smoothing cannot
    (it fails on a frame of another size than the one before), so detection starts afresh."""
    import cv2

    from ram_avatar.pipelines.live import LiveSession
    from ram_avatar.tracking.video import read_video

    clip = shared_data / "video" / "tfjs_synthetic_dance_static_576.mp4"
    frames = read_video(clip, max_frames=3, min_frames=1).frames
    session = LiveSession(tiny)
    try:
        for frame in (frames[0], cv2.resize(frames[1], (288, 288)), frames[2]):
            rendered = session(frame)
            assert rendered is not None and rendered.image.shape == (48, 48, 3)
        assert session.count == 3
    finally:
        session.close()


def test_the_session_solves_poses_on_the_avatars_body(tiny):
    """The live solver's skeleton is the avatar's (its body shape: bone lengths), not the template's default body."""
    import copy

    from ram_avatar.pipelines.live import LiveSession

    pipe = copy.copy(tiny)  # the same avatar, another body shape
    pipe.shape = torch.tensor([0.2, 0.8, 0.3, 0.9, 0.1, 0.7])
    session = LiveSession(pipe)
    try:
        session.detect(np.full((48, 64, 3), 128, np.uint8))
        rest = pipe.rest_joints().double().cpu().numpy()
        assert np.abs(session.solver.skeleton.rest - rest).max() < 1e-5
        assert np.abs(rest - tiny.rest_joints().double().cpu().numpy()).max() > 0.01  # the bodies do differ
    finally:
        session.close()
