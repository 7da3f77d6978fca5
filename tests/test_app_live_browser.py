"""The Live tab in a real browser: Debian's headless Chromium, with the shared dance clip as its
(fake) webcam, streams to the app; avatar frames come back and keep changing, the session's live
loop renders on the server, and closing the page stops that loop (Gradio's unload event). It
screenshots the tab into ``outputs/screenshots/live_tab.png`` (look at it).

Needs ``/usr/bin/chromium`` (never downloaded), the ``playwright`` package, the bundled example
avatar and ``../shared/data`` (the clip).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_app_browser import ARGS as BROWSER_ARGS
from test_app_browser import CHROMIUM, EXAMPLE, ROOT, launch_app

CLIP = "video/tfjs_synthetic_dance_static_576.mp4"
ARGS = [*BROWSER_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # a .y4m as the camera

pytestmark = [
    pytest.mark.slow,  # ~20-60 s on 2 CPU cores: a browser streams a webcam to the app, which renders the avatar
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason="no /usr/bin/chromium: apt-get install -y chromium (never downloaded)"
    ),
    pytest.mark.skipif(
        not (EXAMPLE / "avatar.json").is_file(),
        reason="the bundled example avatar is missing: python scripts/make_example_avatar.py",
    ),
]


def write_y4m(clip: Path, out: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``clip`` as raw YUV 4:2:0 in a .y4m: what Chromium's fake
    camera plays (in a loop)."""
    import av

    with av.open(str(clip)) as source, av.open(str(out), "w", format="yuv4mpegpipe") as sink:
        video = source.streams.video[0]
        stream = sink.add_stream("rawvideo", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for index, frame in enumerate(source.decode(video)):
            if index == frames:
                break
            sink.mux(stream.encode(frame.reformat(format="yuv420p")))
        sink.mux(stream.encode())
    return out


def until(condition, seconds: float, what: str) -> None:
    """Wait for ``condition()`` (generously: this checks that it happens, not how fast)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.2)


def test_the_live_tab_streams_a_webcam_to_the_avatar(tmp_path, monkeypatch, shared_data):
    from playwright import sync_api  # a test dependency (pip install -e ".[test]")

    camera = write_y4m(shared_data / CLIP, tmp_path / "camera.y4m", frames=60)
    app, demo, url = launch_app(tmp_path, monkeypatch)
    shots = ROOT / "outputs" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    outside = []  # requests that leave this machine: the app must work offline
    try:
        with sync_api.sync_playwright() as p:
            args = [*ARGS, f"--use-file-for-fake-video-capture={camera}"]
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            page.goto(url)
            page.get_by_role("tab", name="Live").click()
            page.get_by_role("button", name="Click to Access Webcam").click()
            page.get_by_role("button", name="capture photo").click()  # the webcam's Record button: starts streaming
            avatar = page.locator("#live-avatar img")
            avatar.wait_for(timeout=120_000)  # the avatar loads and warms up first
            sources = set()
            for _ in range(40):  # ~8 s of streaming
                sources.add(avatar.get_attribute("src"))
                page.wait_for_timeout(200)
            assert len(sources) >= 3, sources  # new avatar frames keep arriving
            # the width of a loaded frame (the src may have just changed: 0 until the new one loads)
            loaded = "() => document.querySelector('#live-avatar img').naturalWidth || false"
            assert page.wait_for_function(loaded, timeout=30_000).json_value() == 256  # the example's
            (tab,) = app._live.values()  # one browser session, one live loop
            rendered = tab.live.stats.rendered
            until(lambda: tab.live.stats.rendered > rendered + 5, 60, "more avatar frames rendered")
            assert tab.sent > 0 and tab.live.stats.frames >= tab.live.stats.rendered
            page.screenshot(path=str(shots / "live_tab.png"), full_page=True)
            browser.close()
        until(lambda: not app._live, 60, "the live loop to stop after the page closed")  # Gradio's unload event
        with pytest.raises(RuntimeError, match="closed"):
            tab.live.push(np.zeros((8, 8, 3), np.uint8))
    finally:
        demo.close()
    assert not outside, f"the page fetched from outside: {outside[:5]}"
