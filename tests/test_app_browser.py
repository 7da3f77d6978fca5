"""End to end in a real browser: Debian's headless Chromium driven by Playwright opens the app,
animates the bundled example avatar with an example motion, and checks that a playable video
comes back, that a bad upload gets a readable message naming the file (and sets the example
motion to "none"), and that Create offers the example clip; it screenshots every tab into
``outputs/screenshots/`` (look at them).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``; no browser is ever downloaded),
the ``playwright`` package and the bundled example (``scripts/make_example_avatar.py``).
"""

from __future__ import annotations

import importlib
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = ROOT / "examples" / "avatars" / "dancer-rt256"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,  # ~1-3 minutes on 2 CPU cores: a browser, the app and a 256^2 render
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason="no /usr/bin/chromium: apt-get install -y chromium (never downloaded)"
    ),
    pytest.mark.skipif(
        not (EXAMPLE / "avatar.json").is_file(),
        reason="the bundled example avatar is missing: python scripts/make_example_avatar.py",
    ),
]


def launch_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app, offline, on a free local port, with its zoo and outputs in ``tmp_path``: (app module,
    Blocks, URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(
        RAM_AVATAR_ZOO=str(tmp_path / "zoo"), RAM_AVATAR_APP_OUTPUTS=str(tmp_path / "outputs"), HF_HUB_OFFLINE="1"
    ).items():
        monkeypatch.setenv(key, value)  # restored after the test, as is sys.path
    monkeypatch.syspath_prepend(str(ROOT))
    app = importlib.reload(importlib.import_module("app"))
    demo, (_, url, _) = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return app, demo, url


def test_animate_the_example_in_a_browser(tmp_path, monkeypatch):
    from playwright import sync_api  # a test dependency (pip install -e ".[test]")

    app, demo, url = launch_app(tmp_path, monkeypatch)
    shots = ROOT / "outputs" / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    outside = []  # requests that leave this machine: the app must work offline
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None
            )
            page.goto(url)
            page.get_by_role("tab", name="Animate").wait_for()
            frames = page.get_by_label("Frames (at most)").and_(
                page.locator("input[type=number]")
            )  # the slider's number box
            frames.fill("24")
            frames.press("Enter")
            page.get_by_role("button", name="Animate", exact=True).click()
            video = page.locator("video").first
            video.wait_for(state="attached", timeout=240_000)
            page.wait_for_function(
                "() => { const v = document.querySelector('video'); return v && v.readyState >= 1 && v.duration > 0 }",
                timeout=60_000,
            )
            duration = page.evaluate("document.querySelector('video').duration")
            assert 0.5 < duration < 2.0  # 24 frames at 30 fps: a playable H.264 mp4 of the right length
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "animate.png"), full_page=True)

            broken = tmp_path / "broken.bvh"
            broken.write_text("HIERARCHY\nROOT x {\n")
            page.locator("input[type=file]").first.set_input_files(str(broken))
            sync_api.expect(page.get_by_label("...or an example motion")).to_have_value("none")  # one motion at a time
            page.get_by_role("button", name="Animate", exact=True).click()
            toast = page.get_by_test_id("toast-body").filter(has_text="broken.bvh")
            toast.wait_for(timeout=60_000)
            message = toast.inner_text()
            assert "HIERARCHY" in message and str(tmp_path) not in message and "/tmp" not in message, message
            page.screenshot(path=str(shots / "animate_error.png"), full_page=True)
            uploaded = page.get_by_label("broken.bvh", exact=True)  # the file component's row
            sync_api.expect(uploaded).to_have_count(1)
            page.get_by_label("...or an example motion").click()
            page.get_by_role("option", name="dab.bvh").click()
            sync_api.expect(uploaded).to_have_count(0)  # picking an example removes the upload

            for tab in ("Create", "Live", "Zoo"):
                page.get_by_role("tab", name=tab).click()
                page.wait_for_timeout(800)
                page.screenshot(path=str(shots / f"{tab.lower()}.png"), full_page=True)
                if tab == "Create":
                    assert page.get_by_text("dancer.mp4").count() > 0  # the example clip
            browser.close()
    finally:
        demo.close()
    assert not outside, f"the page fetched from outside: {outside[:5]}"
