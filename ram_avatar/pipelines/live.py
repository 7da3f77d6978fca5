"""Live driving (the paper's live system): camera frames in, avatar frames out, in real time.

- :class:`LiveSession` is one camera's avatar, in four steps: detect the person (MediaPipe
  Holistic), solve the body pose from the landmarks
  (:class:`~ram_avatar.tracking.live_pose.LivePoseSolver`: a few ms, warm-started from the previous
  frame and filtered over time), align the pose (MDA at the session's strength, carrying its state
  from frame to frame) and render it (carrying the avatar's temporal features).
  ``session(frame)`` runs them in turn.
- :class:`LiveLoop` overlaps them on two threads: capture + detection + pose solve on one, MDA +
  render + the sink (window, recording) on the other. They meet in a one-slot :class:`Mailbox`:
  the renderer always takes the newest pose and older ones are dropped, never queued, so latency
  stays bounded when the machine is slower than the camera, and frames come out in order.
  :class:`BackgroundLive` runs it on a thread of its own for frames handed over one at a time
  (:class:`PushedFrames`): the app's Live tab, where Gradio calls a handler per webcam frame.
- Sources: :class:`CameraSource` (an OpenCV camera) and :class:`ClipSource` (a file played at its
  own fps as if it were a camera: frames whose time has passed are skipped); :func:`open_source`
  picks one. :class:`LiveView` is the sink of ``ram-avatar live``: camera | avatar side by side,
  in a window and / or recorded to mp4.

    pipe = RamAvatarPipeline.from_pretrained("examples/avatars/dancer-rt256")
    stats = LiveLoop(open_source("0"), LiveSession(pipe), LiveView(pipe.image_size, window=True)).run()
    print(stats.summary())
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.pipelines.driving import Driving
from ram_avatar.pipelines.ram_avatar_pipeline import RamAvatarPipeline
from ram_avatar.pipelines.streaming import RenderedFrame, Streamer

T = TypeVar("T")
STAGES = ("detect", "solve", "mda", "render", "output")
"""Stages :class:`LiveLoop` times, seconds per call: detection (MediaPipe, downscaling included),
pose solve, MDA, render (posing, rasterizing, the network), output (the sink: encoding, window)."""


# ----------------------------------------------------------------------------- the session


class LiveSession:
    """One camera's avatar: ``session(frame) -> RenderedFrame | None`` for consecutive frames.

    The steps are also methods of their own (:meth:`detect`, :meth:`solve`, :meth:`align`,
    :meth:`draw`) so that :class:`LiveLoop` can run detection and rendering on separate threads;
    the first two carry the detector's and solver's state, the last two the MDA latent and the
    avatar's temporal features, so each pair must see the frames in order.

    Args:
        pipe: the avatar.
        mda_strength: 0..1 (ignored when the avatar has no MDA); may be changed between frames.
        detect_size: frames are downscaled to this longer side for detection.
        filter: smooth the solved poses over time (the solver's filter, against jitter).
    """

    def __init__(
        self,
        pipe: RamAvatarPipeline,
        mda_strength: float = DEFAULT_STRENGTH,
        *,
        detect_size: int = 384,
        filter: bool = True,
    ):
        if not 0.0 <= mda_strength <= 1.0:
            raise ValueError(f"the MDA strength must be within [0, 1] (0 = off, 1 = full), got {mda_strength}")
        self.pipe, self.mda_strength, self.detect_size, self.filter = pipe, mda_strength, detect_size, filter
        self.detector = self.solver = None  # made for the first frame's size (see detect)
        self.image_size: tuple[int, int] | None = None
        self.state: Streamer | None = None  # the stream's MDA latent and temporal features
        self.count = 0

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()

    def detect(self, frame: np.ndarray):
        """MediaPipe's landmarks of the person in an (H, W, 3) uint8 RGB frame, in its pixels (a
        :class:`~ram_avatar.tracking.detect.FrameDetection`)."""
        import cv2

        H, W = frame.shape[:2]
        if self.image_size != (H, W):
            from ram_avatar.tracking.detect import PersonDetector
            from ram_avatar.tracking.live_pose import LivePoseSolver

            self.close()  # MediaPipe's mask smoothing fails on a frame of another size than the last
            self.detector = PersonDetector(others_every=0)
            # the avatar's own body shape: the skeleton's bone lengths are the subject's, not the template's default
            self.solver = LivePoseSolver(self.pipe.template, (H, W), filter=self.filter, shape=self.pipe.shape)
            self.image_size = (H, W)
        scale = min(1.0, self.detect_size / max(H, W))
        if scale < 1:
            frame = cv2.resize(frame, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
        return self.detector(np.ascontiguousarray(frame), (H, W))

    def solve(self, detection, timestamp: float) -> Driving | None:
        """The pose (and, for templates with facial actions, the expression) of a detection of the
        last frame :meth:`detect` saw, captured at ``timestamp`` (seconds, for the filter), as a
        one-frame :class:`Driving`; None when nobody is seen."""
        pose = self.solver(detection, timestamp)
        if pose is None:
            return None
        return Driving(pose.to("cpu"), self.pipe.fps, "live", expression=self.solver.expression.cpu())

    @torch.no_grad()
    def align(self, driving: Driving) -> tuple[Driving, dict[str, list]]:
        """MDA of one frame at ``mda_strength``, continuing from the previous frame: the frame with
        the aligned pose, and its log (``ood_before`` / ``ood_after`` / ``change_deg``; empty
        without MDA)."""
        if not 0.0 <= self.mda_strength <= 1.0:
            raise ValueError(f"the MDA strength must be within [0, 1] (0 = off, 1 = full), got {self.mda_strength}")
        if self.state is None:  # the framing's height: the first frame's
            self.state = self.pipe.streamer(driving)
        pose, mda = self.state.align(driving, self.mda_strength)
        return replace(driving, pose=pose), mda

    @torch.no_grad()
    def draw(self, driving: Driving, mda: dict[str, list] | None = None) -> RenderedFrame:
        """The avatar in a one-frame (aligned) :class:`Driving`, following on from the frame drawn before."""
        pipe = self.pipe
        if self.state is None:
            self.state = pipe.streamer(driving)
        rendered = self.state.draw(driving, driving.pose, mda)
        frame = rendered[0]
        frame.index = self.count
        self.count += 1
        return frame

    def reset(self) -> None:
        """Forget the past frames (a new camera or scene): solver, MDA latent, temporal features."""
        if self.solver is not None:
            self.solver.reset()
        self.state, self.count = None, 0

    def warm_up(self, image_size: tuple[int, int] = (480, 640)) -> None:
        """Load the template, the solver and the renderer, start MediaPipe and compile the CPU
        loops, so that the first camera frames do not wait for them; then :meth:`reset`.
        ``image_size``: (H, W) of the camera's frames."""
        self.detect(np.full((*image_size, 3), 128, np.uint8))
        self.draw(*self.align(Driving(SmplxPose.zeros(1), self.pipe.fps, "live")))
        self.reset()

    def __call__(self, frame: np.ndarray, timestamp: float | None = None) -> RenderedFrame | None:
        """The avatar in the pose of the person in ``frame`` (None when nobody is seen);
        ``timestamp``: when it was captured (default: now)."""
        detection = self.detect(frame)
        driving = self.solve(detection, time.perf_counter() if timestamp is None else timestamp)
        return None if driving is None else self.draw(*self.align(driving))


# ----------------------------------------------------------------------------- sources


@dataclass
class Captured:
    """One camera frame."""

    index: int  # its number since the source started (gaps: frames the source skipped)
    time: float  # time.perf_counter() when the camera delivered it
    image: np.ndarray  # (H, W, 3) uint8 RGB


class Source(Protocol):
    """What :class:`LiveLoop` reads: frames in order, the camera's rate and frame size (H, W), how
    many frames it skipped."""

    fps: float
    size: tuple[int, int]
    skipped: int

    def __iter__(self) -> Iterator[Captured]: ...

    def close(self) -> None: ...


class Mailbox(Generic[T]):
    """A one-slot mailbox between two threads: :meth:`put` replaces an item not yet taken (which
    is dropped and counted, never queued); :meth:`take` waits for an item and returns None once
    the mailbox is closed and empty."""

    def __init__(self):
        self._ready = threading.Condition()
        self._item: T | None = None
        self._full = self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._ready:
            self.dropped += self._full
            self._item, self._full = item, True
            self._ready.notify()

    def take(self) -> T | None:
        with self._ready:
            while not (self._full or self._closed):
                self._ready.wait(0.1)  # woken regularly: Ctrl-C reaches a waiting main thread
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class CameraSource:
    """An OpenCV camera. A thread of its own reads it continuously and keeps only the newest frame
    (``skipped`` counts those replaced before anyone took them): camera drivers queue frames, and
    a reader slower than the camera would otherwise fall further and further behind."""

    def __init__(self, index: int):
        import cv2

        logging = cv2.utils.logging
        level = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)  # each failing backend would print its own lines
        try:
            self.capture = cv2.VideoCapture(index)
            ok, first = self.capture.read() if self.capture.isOpened() else (False, None)
        finally:
            logging.setLogLevel(level)
        if not ok:
            self.capture.release()
            raise ValueError(
                f"cannot open camera {index}: there is none at that index or another program is using it; "
                "try another index (--source 1) or a video file (--source clip.mp4)"
            )
        self.index, self.size = index, first.shape[:2]
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 30.0)
        self._frames: Mailbox[Captured] = Mailbox()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def skipped(self) -> int:
        return self._frames.dropped

    def _read(self) -> None:
        try:
            count = 0
            while not self._closed.is_set():
                ok, bgr = self.capture.read()
                if not ok:  # unplugged
                    break
                self._frames.put(Captured(count, time.perf_counter(), bgr))
                count += 1
        finally:
            self.capture.release()
            self._frames.close()

    def __iter__(self) -> Iterator[Captured]:
        import cv2

        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="ram-avatar-camera", daemon=True)
            self._thread.start()
        while (frame := self._frames.take()) is not None:
            frame.image = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)  # only the frames taken
            yield frame

    def close(self) -> None:
        """Stop reading: the reader thread releases the camera after its current frame."""
        self._closed.set()
        if self._thread is None:
            self.capture.release()
        else:
            self._thread.join()


def _held(image: np.ndarray) -> Callable[[], np.ndarray]:
    """A function giving ``image``: a decoded frame in the form :meth:`ClipSource._decoded` gives."""
    return lambda: image


class ClipSource:
    """A video file as if it were a camera: frame ``i`` is due ``i / fps`` after the first (by its
    timestamp), a reader that asks early waits for it, and frames whose time has passed (the next
    one is already due) are skipped. ``realtime=False`` delivers every frame at once instead.

    Frames are downscaled to ``max_side`` (a camera's resolution; detection downscales further):
    ``size`` (H, W). ``preload=True`` decodes the whole clip when the source is made, so that
    playing it costs what a camera costs (a driver hands over decoded frames) rather than the
    decoding of every frame, skipped ones included (benchmarks; short clips only).
    Opening checks the file: a missing or unreadable one raises ``TrackingError`` (a ValueError)
    naming it.
    """

    def __init__(self, path: str | os.PathLike, *, max_side: int = 720, realtime: bool = True, preload: bool = False):
        from ram_avatar.tracking.video import probe_video

        self.info = probe_video(path)  # also checks the file against the video limits
        scale = min(1.0, max_side / max(self.info.size))
        self.size = (round(self.info.size[0] * scale), round(self.info.size[1] * scale))
        self.fps, self.realtime, self.skipped = self.info.fps, realtime, 0
        self._closed = threading.Event()
        self._preloaded = [(stamp, _held(picture())) for stamp, picture in self._decoded()] if preload else None

    def _decoded(self) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
        """(timestamp in seconds, a function giving the frame (H, W, 3) uint8 RGB) per frame; the
        picture is only converted when asked for, so skipped frames cost their decoding alone."""
        import av

        from ram_avatar.tracking.video import TrackingError, rotate_frame

        info = self.info
        height, width = self.size if info.rotation % 180 == 0 else self.size[::-1]  # scaled before the rotation
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for index, frame in enumerate(container.decode(stream)):
                    stamp = frame.time if frame.time is not None else index / self.fps
                    picture = lambda frame=frame: rotate_frame(  # noqa: E731
                        frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA"),
                        info.rotation,
                    )
                    yield stamp, picture
            except av.error.FFmpegError as error:
                message = f"{info.path.name}: decoding failed ({error}); the file is corrupt or truncated"
                raise TrackingError(message) from error

    def __iter__(self) -> Iterator[Captured]:
        frames = self._decoded() if self._preloaded is None else self._preloaded
        start = first = None
        for index, (stamp, picture) in enumerate(frames):
            if self._closed.is_set():
                return
            first = stamp if first is None else first
            now = time.perf_counter()
            start = now if start is None else start
            due = start + stamp - first
            if self.realtime:
                if now >= due + 1.0 / self.fps:  # its time has passed: the camera shows the next one by now
                    self.skipped += 1
                    continue
                time.sleep(max(0.0, due - now))
            yield Captured(index, due if self.realtime else time.perf_counter(), picture())

    def close(self) -> None:
        self._closed.set()


class PushedFrames:
    """A source fed frame by frame (a webcam whose frames arrive as calls, as in the app): :meth:`push`
    puts a frame in a one-slot :class:`Mailbox`, replacing one not yet taken (counted in
    ``skipped``), so the loop always detects the newest frame. Iterating ends after :meth:`close`;
    frames pushed after it are dropped.
    ``fps``: the rate frames are expected at; ``size``: the last frame's (H, W) (None before one)."""

    def __init__(self, fps: float = 30.0):
        self.fps = fps
        self.size: tuple[int, int] | None = None
        self._frames: Mailbox[Captured] = Mailbox()
        self._count = 0
        self._closed = False

    @property
    def skipped(self) -> int:
        return self._frames.dropped

    def push(self, image: np.ndarray, timestamp: float | None = None) -> None:
        """Hand over an (H, W, 3) uint8 RGB frame captured at ``timestamp`` (time.perf_counter(); default: now)."""
        if self._closed:
            return
        self.size = image.shape[:2]
        self._frames.put(Captured(self._count, time.perf_counter() if timestamp is None else timestamp, image))
        self._count += 1

    def __iter__(self) -> Iterator[Captured]:
        while (frame := self._frames.take()) is not None:
            yield frame

    def close(self) -> None:
        self._closed = True
        self._frames.close()


def open_source(source: str | int, *, max_side: int = 720) -> CameraSource | ClipSource:
    """A camera index (``0``, ``"1"``) or a video file path."""
    if isinstance(source, int) or str(source).isdigit():
        return CameraSource(int(source))
    return ClipSource(source, max_side=max_side)


# ----------------------------------------------------------------------------- the loop


@dataclass
class LiveFrame:
    """What :class:`LiveLoop` hands its sink for each frame it renders."""

    index: int  # the camera frame's index (gaps: frames skipped or dropped)
    captured: float  # time.perf_counter() at capture
    camera: np.ndarray  # (H, W, 3) uint8 RGB
    avatar: RenderedFrame | None  # None when nobody was seen in the frame
    latency: float  # seconds from capture to the avatar frame (before the sink)


@dataclass
class LiveStats:
    """What a :class:`LiveLoop` run did."""

    frames: int = 0  # camera frames detected (and their pose solved)
    skipped: int = 0  # camera frames the source skipped: their time passed before the detector was free
    dropped: int = 0  # frames detected but never rendered: a newer pose replaced them
    rendered: int = 0  # avatar frames out
    unseen: int = 0  # frames with nobody in view (nothing to render)
    seconds: float = 0.0  # from the first camera frame to the end
    latency: list[float] = field(default_factory=list)  # seconds, capture -> avatar frame, per rendered frame
    stages: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})  # seconds per call
    interrupted: bool = False  # stopped by Ctrl-C

    @property
    def fps(self) -> float:
        """Avatar frames out per second."""
        return self.rendered / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Two lines: frames, rate, latency and losses; the median time of each stage."""
        latency = "no frames rendered"
        if self.latency:
            ms = np.asarray(self.latency) * 1000
            latency = f"latency median {np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms"
        lost = f"{self.skipped} skipped by the camera (detection behind), {self.dropped} dropped (rendering behind)"
        stages = ", ".join(f"{name} {1000 * statistics.median(t):.1f}" for name, t in self.stages.items() if t)
        stopped = ", stopped by Ctrl-C" if self.interrupted else ""
        return (
            f"{self.rendered} avatar frames in {self.seconds:.1f} s{stopped}: {self.fps:.1f} FPS, {latency}; "
            f"{lost}; {self.unseen} with nobody in view\nmedian ms per call: {stages or '-'}"
        )


class _Stage(Protocol):
    """The four steps :class:`LiveLoop` runs (:class:`LiveSession`'s)."""

    def detect(self, frame: np.ndarray) -> Any: ...

    def solve(self, detection: Any, timestamp: float) -> Driving | None: ...

    def align(self, driving: Driving) -> tuple[Driving, dict]: ...

    def draw(self, driving: Driving, mda: dict | None = None) -> RenderedFrame: ...


@dataclass
class _Job:
    captured: Captured
    driving: Driving | None  # the frame's solved pose; None: nobody in view


class LiveLoop:
    """Camera -> avatar, pipelined: ``LiveLoop(source, session, sink).run() -> LiveStats``.

    A thread of its own reads ``source`` and detects and solves every frame it gets; the thread
    that calls :meth:`run` takes the newest solved pose whenever it is free, aligns and renders
    it and hands a :class:`LiveFrame` to ``sink`` (poses it had no time for are dropped). PyTorch's
    threads are split between the two for the run. ``sink`` returns False to stop (a window was
    closed); ``max_frames`` stops after that many camera frames. The run ends when the source
    does, on Ctrl-C (``stats.interrupted``) or after :meth:`stop`; an error in either thread
    stops both and is raised by :meth:`run`.
    """

    def __init__(
        self,
        source: Source,
        session: _Stage,
        sink: Callable[[LiveFrame], bool | None] | None = None,
        *,
        max_frames: int | None = None,
    ):
        self.source, self.session, self.sink, self.max_frames = source, session, sink, max_frames
        self.stats = LiveStats()
        self._poses: Mailbox[_Job] = Mailbox()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._start: float | None = None

    def stop(self) -> None:
        """Ask both threads to finish (from any thread)."""
        self._stop.set()
        self.source.close()
        self._poses.close()

    def run(self) -> LiveStats:
        from ram_avatar.device import split_threads

        producer = threading.Thread(target=self._produce, name="ram-avatar-live-detect", daemon=True)
        with split_threads(2):
            producer.start()
            try:
                self._consume()
            except KeyboardInterrupt:
                self.stats.interrupted = True
            except BaseException as error:
                self._error = self._error or error
            finally:
                self.stop()
                producer.join()
        stats = self.stats
        stats.seconds = time.perf_counter() - self._start if self._start is not None else 0.0
        stats.skipped, stats.dropped = self.source.skipped, self._poses.dropped
        if self._error is not None:
            raise self._error
        return stats

    def _produce(self) -> None:
        stages, frames = self.stats.stages, iter(self.source)
        try:
            for captured in frames:
                if self._stop.is_set():
                    break
                self._start = self._start or captured.time
                tick = time.perf_counter()
                detection = self.session.detect(captured.image)
                solved = time.perf_counter()
                driving = self.session.solve(detection, captured.time)
                stages["detect"].append(solved - tick)
                stages["solve"].append(time.perf_counter() - solved)
                self.stats.frames += 1
                self.stats.unseen += driving is None
                self._poses.put(_Job(captured, driving))
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    break
        except BaseException as error:
            self._error = error
        finally:
            if hasattr(frames, "close"):
                frames.close()  # a generator's own cleanup (the clip's file) runs now, on this thread
            self._poses.close()

    def _consume(self) -> None:
        stages = self.stats.stages
        while (job := self._poses.take()) is not None:
            if self._error is not None:
                break
            avatar = None
            if job.driving is not None:
                tick = time.perf_counter()
                driving, mda = self.session.align(job.driving)
                aligned = time.perf_counter()
                avatar = self.session.draw(driving, mda)
                now = time.perf_counter()
                stages["mda"].append(aligned - tick)
                stages["render"].append(now - aligned)
                self.stats.rendered += 1
                self.stats.latency.append(now - job.captured.time)
            if self.sink is not None:
                tick = time.perf_counter()
                keep = self.sink(
                    LiveFrame(
                        job.captured.index,
                        job.captured.time,
                        job.captured.image,
                        avatar,
                        time.perf_counter() - job.captured.time,
                    )
                )
                stages["output"].append(time.perf_counter() - tick)
                if keep is False:
                    break


class BackgroundLive:
    """:class:`LiveLoop` on a thread of its own, fed frame by frame, for callers that get one camera
    frame at a time and must answer at once (the app's Live tab: Gradio calls it per webcam frame).

    ``push(frame)`` hands the frame to the loop (replacing one it has not taken yet: the loop
    detects the newest) and returns at once the newest avatar frame rendered so far (None before
    the first); the caller never waits for detection or rendering. An error on the loop's threads
    is raised by the next push, which closes this. ``warm_up``: the (H, W) of the camera's frames,
    to warm ``session`` up for on the loop's thread before its first frame. :meth:`close` stops
    the loop and closes ``session`` (this owns it); ``stats`` counts what the loop did so far.
    """

    def __init__(self, session: LiveSession, *, warm_up: tuple[int, int] | None = None, fps: float = 30.0):
        self.session = session
        self.source = PushedFrames(fps)
        self.loop = LiveLoop(self.source, session, self._keep)
        self.latest: RenderedFrame | None = None
        self._error: BaseException | None = None
        self._closed = False
        name = "ram-avatar-live-background"
        self._thread = threading.Thread(target=self._run, args=(warm_up,), name=name, daemon=True)
        self._thread.start()

    @property
    def stats(self) -> LiveStats:
        return self.loop.stats

    def _keep(self, frame: LiveFrame) -> None:
        if frame.avatar is not None:  # nobody in view: keep the last avatar frame
            self.latest = frame.avatar

    def _run(self, warm_up: tuple[int, int] | None) -> None:
        try:
            if warm_up is not None:
                self.session.warm_up(warm_up)
            self.loop.run()
        except BaseException as error:  # noqa: BLE001 - raised on the caller's thread by the next push
            self._error = error

    def push(self, frame: np.ndarray, timestamp: float | None = None) -> RenderedFrame | None:
        """Hand ``frame`` ((H, W, 3) uint8 RGB, captured at ``timestamp``; default: now) to the loop;
        the newest avatar frame rendered so far (its ``index`` counts the frames rendered)."""
        if self._error is not None:
            error, self._error = self._error, None
            self.close()
            raise error
        if self._closed:
            raise RuntimeError("this live loop is closed: make a new one to push frames again")
        self.source.push(frame, timestamp)
        return self.latest

    def close(self) -> None:
        """Stop the loop (after the frame it is on) and close the session."""
        if self._closed:
            return
        self._closed = True
        self.loop.stop()
        self._thread.join()
        self.session.close()


# ----------------------------------------------------------------------------- the view


def side_by_side(camera: np.ndarray, avatar: np.ndarray) -> np.ndarray:
    """camera | avatar, the camera frame scaled to the avatar's height (even width, for H.264)."""
    import cv2

    H = avatar.shape[0]
    W = max(2, round(camera.shape[1] * H / camera.shape[0] / 2) * 2)
    return np.hstack([cv2.resize(camera, (W, H), interpolation=cv2.INTER_AREA), avatar])


def display_available() -> bool:
    """Whether a window can be shown: on Linux, an X11 or Wayland display is set."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class LiveView:
    """A :class:`LiveLoop` sink: camera | avatar side by side, in an OpenCV window (``window``;
    closing it or pressing q / Esc stops the loop) and / or recorded to ``out`` (an .mp4 at the
    camera's ``fps``; each frame is held until the next rendered one, so the recording plays in
    real time, in step with the camera). Before the first avatar frame, and while nobody is in
    view, the avatar side shows the last avatar frame (white at first)."""

    TITLE = "ram-avatar live (q: quit)"

    def __init__(
        self,
        avatar_size: tuple[int, int],
        *,
        window: bool = False,
        out: str | os.PathLike | None = None,
        fps: float = 30.0,
    ):
        from ram_avatar.pipelines.video import VideoWriter

        if window:
            import cv2

            cv2.namedWindow(self.TITLE, cv2.WINDOW_AUTOSIZE)  # raises cv2.error without a GUI backend
        self.window = window
        self.writer = None if out is None else VideoWriter(out, fps, threads=1)  # the encoder shares the CPU
        self._avatar = np.full((*avatar_size, 3), 255, np.uint8)
        self._last: tuple[int, np.ndarray] | None = None  # the index and picture last recorded

    def __call__(self, frame: LiveFrame) -> bool:
        if frame.avatar is not None:
            self._avatar = frame.avatar.image
        picture = side_by_side(frame.camera, self._avatar)
        if self.writer is not None:
            if self._last is not None:
                for _ in range(frame.index - self._last[0] - 1):  # hold the last picture over the frames not shown
                    self.writer.write(self._last[1])
            self.writer.write(picture)
            self._last = (frame.index, picture)
        if self.window:
            import cv2

            cv2.imshow(self.TITLE, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27) or cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
                return False
        return True

    def close(self) -> Path | None:
        """Close the window and finish the recording (its path; None when nothing was recorded)."""
        if self.writer is not None and self._last is not None:
            self._close_window()
            return self.writer.close()
        self.abort()
        return None

    def abort(self) -> None:
        """Close the window; no recording is left behind."""
        self._close_window()
        if self.writer is not None:
            self.writer.abort()

    def _close_window(self) -> None:
        if self.window:
            import cv2

            cv2.destroyWindow(self.TITLE)
            self.window = False
