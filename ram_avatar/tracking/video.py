"""Decoding a monocular clip into RGB frames, streamed, upright and optionally resampled in time.

PyAV (FFmpeg) decodes any common container and codec (mp4/mov/webm/mkv, H.264, HEVC, VP9, AV1
where FFmpeg has a decoder). Phone videos are often stored sideways with a rotation in their
display matrix; frames come out the way a player shows them. Every problem the user can fix
raises :class:`TrackingError` saying what to do. The file size, frame size, frame rate and
duration are checked against :mod:`ram_avatar.limits` (``video_file_mb``, ``video_pixels``,
``fps``, ``video_seconds``) from the container's metadata, before any frame is decoded.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ram_avatar.limits import check_limit, limit

MIN_FRAMES = 10  # fewer frames than this cannot train an avatar (nor be smoothed over time)


class TrackingError(ValueError):
    """The input cannot be tracked (missing, corrupt, no person, ...); the message says why."""


@dataclass
class VideoInfo:
    """What the container says about a clip, in display orientation."""

    path: Path
    size: tuple[int, int]  # (H0, W0) of the upright frames
    fps: float  # nominal frame rate of the source
    num_frames: int  # frame count from the container; an estimate (0 if it does not say)
    rotation: int  # counter-clockwise degrees applied to stored frames: 0, 90, 180 or 270
    codec: str


@dataclass
class Video:
    """Decoded frames of a clip. Frame ``i`` is frame ``frame_indices[i]`` of the source."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, upright
    fps: float  # frame rate of ``frames`` (the source's, or lower after resampling)
    frame_indices: np.ndarray  # (N,) int64, index of each frame in the source, increasing
    source_size: tuple[int, int]  # (H0, W0) of the upright source frames
    rotation: int  # rotation that was applied, counter-clockwise degrees


def rotate_frame(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate ``frame`` (H, W, ...) counter-clockwise by ``rotation`` degrees (a multiple of 90).

    This is how players honour a display matrix: a phone filming in portrait stores landscape
    frames with rotation -90 (270), i.e. they are shown turned 90 degrees clockwise.
    """
    return np.ascontiguousarray(np.rot90(frame, k=(rotation // 90) % 4))


def _display_rotation(frame: av.VideoFrame) -> int:
    # PyAV reads the DISPLAYMATRIX side data: degrees counter-clockwise in [-180, 180]. Odd
    # angles do not occur in practice; snap to the nearest quarter turn. (Mirroring, which a
    # display matrix can also ask for, is rare and ignored.)
    return int(round(frame.rotation / 90.0)) % 4 * 90


def _open(path: Path) -> av.container.InputContainer:
    """Open ``path`` for decoding, turning every way it can fail into a TrackingError."""
    if not path.exists():
        raise TrackingError(f"{path}: video file not found; check the path")
    if path.is_dir():
        raise TrackingError(f"{path}: is a folder, not a video file; pass the clip itself")
    if path.stat().st_size == 0:
        raise TrackingError(f"{path}: the file is empty (0 bytes); copy or export the clip again")
    check_limit("video_file_mb", path.stat().st_size / 2**20, path.name)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise TrackingError(
            f"{path}: cannot be read as a video ({error.__class__.__name__}: the file is corrupt, "
            "truncated or not a video); re-export it as mp4 (H.264) and try again"
        ) from error
    format_name = container.format.name
    if not container.streams.video:
        container.close()
        raise TrackingError(f"{path}: has no video stream ({format_name}); pass a video clip")
    # FFmpeg reads photos with its image demuxers (image2, png_pipe, jpeg_pipe, ...): a photo
    # is not a clip, even where its codec (e.g. mjpeg) could also carry video.
    if format_name == "image2" or format_name.endswith("_pipe"):
        codec = container.streams.video[0].codec_context.name
        container.close()
        raise TrackingError(
            f"{path}: is a still image ({codec}), not a video; film a clip of at least "
            f"{MIN_FRAMES} frames (a few seconds) of the person turning around"
        )
    return container


def _frames(container: av.container.InputContainer, path: Path) -> Iterator[av.VideoFrame]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is not the bottleneck then
    index = 0
    try:
        for frame in container.decode(stream):
            yield frame
            index += 1
    except av.error.FFmpegError as error:
        raise TrackingError(
            f"{path}: decoding failed after frame {index} ({error}); the file is corrupt or "
            "truncated: re-export or copy it again, or cut the clip before the damage"
        ) from error


def _check_limits(container: av.container.InputContainer, path: Path) -> tuple[float, int]:
    """Check the clip's frame size, frame rate and duration as its container states them (no
    frame decoded) against the limits; returns its frame rate and frame count (0: not stated)."""
    stream = container.streams.video[0]
    check_limit("video_pixels", stream.codec_context.width * stream.codec_context.height, f"{path.name} (frame size)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 30.0
    check_limit("fps", fps, path.name)
    count = stream.frames
    if not count and stream.duration and stream.time_base:
        count = round(float(stream.duration * stream.time_base) * fps)
    seconds = max(count / fps, float(container.duration or 0) / av.time_base)
    check_limit("video_seconds", seconds, path.name)
    return fps, int(count or 0)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open ``path``, check its metadata against the limits, decode its first frame and describe
    the clip. Raises TrackingError (a LimitError over a limit)."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps, count = _check_limits(container, path)
        first = next(_frames(container, path), None)
        if first is None:
            raise TrackingError(f"{path}: holds no decodable video frame; re-export the clip")
        check_limit("video_pixels", first.width * first.height, f"{path.name} (frame size)")  # if the header lied
        rotation = _display_rotation(first)
        size = (first.height, first.width) if rotation % 180 == 0 else (first.width, first.height)
        return VideoInfo(path, size, fps, count, rotation, stream.codec_context.name)


class VideoStream:
    """Iterate a clip's frames one at a time: ``for index, frame in VideoStream(path): ...``.

    Yields ``(source_index, frame)`` with ``frame`` (H, W, 3) uint8 RGB, upright. Opening checks
    the file (raising :class:`TrackingError`); decoding happens while iterating, so a 1080p
    clip is never held in memory. Each iteration decodes the file again from the start.

    Args:
        path: the clip.
        max_frames: stop after this many output frames.
        fps: resample to this frame rate by picking, for each output time ``k / fps``, the
            source frame nearest to it; frames are never repeated, so an ``fps`` above the
            source's keeps the source's rate.
        max_side: downscale frames (area filter, during colour conversion) so that their longer
            side is at most this; never upscales.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        max_frames: int | None = None,
        fps: float | None = None,
        max_side: int | None = None,
    ):
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        self.info = probe_video(path)
        self.fps = float(min(fps, self.info.fps)) if fps else self.info.fps
        self.max_frames = max_frames
        scale = min(1.0, max_side / max(self.info.size)) if max_side else 1.0
        self.size = (round(self.info.size[0] * scale), round(self.info.size[1] * scale))

    def __len__(self) -> int:
        """Expected number of frames (exact unless the container misreports its length)."""
        source = self.info.num_frames
        count = math.ceil(source * self.fps / self.info.fps - 1e-6) if source else 0
        return min(count, self.max_frames) if self.max_frames else count

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        info = self.info
        # PyAV scales the stored frame, before the rotation: swap sides for quarter turns
        height, width = self.size if info.rotation % 180 == 0 else self.size[::-1]
        scaled = dict(width=width, height=height, interpolation="AREA")
        options = scaled if self.size != info.size else {}
        # Times come from timestamps (phone clips often have a variable frame rate), else from
        # the index; a frame is kept when it is the first one within half a source frame of the
        # next output time.
        period, tolerance = 1.0 / self.fps, 0.5 / info.fps
        next_time, start, kept, decoded = 0.0, None, 0, 0
        longest, largest = limit("video_seconds"), limit("video_pixels")
        with _open(info.path) as container:
            for index, frame in enumerate(_frames(container, info.path)):
                decoded = index + 1
                time = frame.time if frame.time is not None else index / info.fps
                start = time if start is None else start
                time -= start
                if time > longest:  # a stream that does not state its length runs on past the limit
                    check_limit("video_seconds", time, info.path.name)
                if frame.width * frame.height > largest:  # a stream may change its frame size mid-way
                    check_limit("video_pixels", frame.width * frame.height, f"{info.path.name} (frame size)")
                if time < next_time - tolerance:
                    continue
                while next_time <= time + tolerance:
                    next_time += period
                image = frame.to_ndarray(format="rgb24", **options)
                yield index, rotate_frame(image, info.rotation)
                kept += 1
                if self.max_frames and kept >= self.max_frames:
                    return
        # FFmpeg skips over missing data quietly: a cut-off file just ends early.
        if decoded < 0.95 * info.num_frames - 1:
            warnings.warn(
                f"{info.path}: decoding stopped after {decoded} of the {info.num_frames} frames "
                "the file announces; it is probably truncated (copy or export it again)",
                stacklevel=2,
            )


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    fps: float | None = None,
    max_side: int | None = None,
    min_frames: int = MIN_FRAMES,
) -> Video:
    """Decode a whole clip into memory (see :class:`VideoStream` for the arguments).

    Raises :class:`TrackingError` if the file is missing, empty, corrupt, a still image, or
    yields fewer than ``min_frames`` frames.
    """
    stream = VideoStream(path, max_frames=max_frames, fps=fps, max_side=max_side)
    indices, frames = [], []
    for index, frame in stream:
        indices.append(index)
        frames.append(frame)
    check_frame_count(stream, len(frames), min_frames)
    return Video(
        np.stack(frames),
        stream.fps,
        np.array(indices, np.int64),
        stream.info.size,
        stream.info.rotation,
    )


def check_frame_count(stream: VideoStream, count: int, min_frames: int = MIN_FRAMES) -> None:
    """Raise TrackingError if ``stream`` gave fewer than ``min_frames`` frames."""
    if count >= min_frames:
        return
    fix = "film a longer clip"
    if stream.fps < stream.info.fps:
        fix += " or ask for a higher --fps"
    if stream.max_frames is not None and stream.max_frames < min_frames:
        fix += f" or raise --max-frames to at least {min_frames}"
    raise TrackingError(
        f"{stream.info.path}: only {count} frame(s) to track, at least {min_frames} are needed; "
        f"{fix} (a few seconds of the whole body is enough)"
    )
