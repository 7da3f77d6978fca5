"""Videos (tracked by ``track`` / ``create``, or driving ``animate``) are checked against the limits
from the file and the container's metadata before a frame is decoded: file size, frame size,
frame rate and duration; a stream that runs on past the duration limit stops there."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import ram_avatar.tracking.video as video_module
from ram_avatar.limits import LimitError
from ram_avatar.tracking import TrackingError, VideoStream, probe_video, read_video


def clip(path: Path, frames: int = 12, size: tuple[int, int] = (48, 64), fps: Fraction | int = 30) -> Path:
    """An H.264 mp4 of ``frames`` grey ramps of ``size`` (H, W) at ``fps``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            image = np.full((*size, 3), 8 * index % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode a frame fails the test: the limits must be checked before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a frame was decoded before the limits were checked")

    monkeypatch.setattr(video_module, "_frames", refuse)


def test_frame_size_is_checked_before_decoding(tmp_path, monkeypatch, no_decoding):
    path = clip(tmp_path / "wide.mp4")
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_PIXELS", str(48 * 64 - 1))
    with pytest.raises(
        LimitError,
        match=r"^wide.mp4 \(frame size\): pixels in one video frame is 3072, but must be "
        r"at most 3071\. .*RAM_AVATAR_LIMIT_VIDEO_PIXELS",
    ):
        probe_video(path)


@pytest.mark.parametrize(("fps", "shown"), [(Fraction(1, 100), "0.01"), (2000, "2000")], ids=["0.01-fps", "2000-fps"])
def test_frame_rates_outside_the_default_range_are_refused(tmp_path, no_decoding, fps, shown):
    path = clip(tmp_path / "odd.mp4", fps=fps)
    with pytest.raises(LimitError, match=f"^odd.mp4: frames per second.*is {shown}, but must be between 0.1 and 1000"):
        read_video(path)


def test_duration_is_checked_before_decoding(tmp_path, monkeypatch):
    path = clip(tmp_path / "long.mp4", frames=30)  # 1 s
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_SECONDS", "2")
    assert len(read_video(path).frames) == 30
    monkeypatch.setattr(video_module, "_frames", lambda *a: pytest.fail("decoded before the duration was checked"))
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_SECONDS", "0.5")
    with pytest.raises(LimitError, match=r"^long.mp4: duration of a video .* is 1, but must be at most 0\.5"):
        probe_video(path)


def test_file_size_is_checked_before_opening(tmp_path, monkeypatch):
    path = clip(tmp_path / "big.mp4")
    monkeypatch.setattr(av, "open", lambda *a, **k: pytest.fail("opened before the file size was checked"))
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_FILE_MB", f"{path.stat().st_size / 2**20 / 2}")
    with pytest.raises(LimitError, match="^big.mp4: size of a video file in MB is .*RAM_AVATAR_LIMIT_VIDEO_FILE_MB"):
        read_video(path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(TrackingError, match="the file is empty"):  # still said first
        read_video(empty)


def test_a_stream_longer_than_the_limit_stops_while_decoding(tmp_path, monkeypatch):
    """A stream need not state its length; decoding stops at the limit whatever it says."""
    stream = VideoStream(clip(tmp_path / "endless.mp4", frames=30))  # probed under the default limits
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_SECONDS", "0.5")
    frames = []
    with pytest.raises(LimitError, match="^endless.mp4: duration of a video .* but must be at most 0.5"):
        for index, _ in stream:
            frames.append(index)
    assert frames == list(range(16))  # up to 0.5 s, the frame at 0.533 s refused


def test_a_frame_larger_than_the_limit_stops_while_decoding(tmp_path, monkeypatch):
    stream = VideoStream(clip(tmp_path / "grows.mp4"))
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_PIXELS", "100")
    with pytest.raises(LimitError, match=r"^grows.mp4 \(frame size\)"):
        next(iter(stream))


def test_a_driving_video_is_checked_before_tracking(tmp_path, monkeypatch):
    """``animate`` with a clip: refused by its limits before the tracker starts."""
    from ram_avatar.pipelines import RamAvatarPipeline

    example = Path(__file__).resolve().parents[1] / "examples" / "avatars" / "dancer-rt256"
    pipe = RamAvatarPipeline.from_pretrained(example, device="cpu")
    monkeypatch.setattr(video_module, "_frames", lambda *a: pytest.fail("decoded before the limits were checked"))
    with pytest.raises(LimitError, match="^fast.mp4: frames per second"):
        pipe.load_driving(clip(tmp_path / "fast.mp4", fps=2000), progress=False)
