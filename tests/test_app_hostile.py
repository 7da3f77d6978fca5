"""The Gradio app against hostile input (issue 19), through its API where a client would meet the
failure: a server path sent for a file and inputs of the wrong type get a sentence (they got a bare
``{"error": null}``), numbers are bounded on the server, uploads are checked against the limits before
any work, a LimitError reads as the visitor's error, no server path reaches a visitor, result
folders are pruned, Gradio's cache loses the app's files, and outputs get the umask's permissions.
The app is launched once (test_app's fixtures) with the tiny avatar in its zoo."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_app import ROOT, TINY, client, free_port, served  # noqa: F401 - the app's fixtures, launched once here

EXAMPLE_CLIP = ROOT / "examples" / "clips" / "dancer.mp4"  # 120 frames, 30 fps: 4 s


def no_progress(*args, **kwargs) -> None:  # noqa: ANN002, ANN003 - stands for gr.Progress
    """Calls of the handlers made here report to nobody."""


def no_job(*args, **kwargs) -> None:  # noqa: ANN002, ANN003 - stands for create_avatar
    """A create job that fails at once: the tests here expect none to start."""
    raise RuntimeError("a create job started")


def call_raw(url: str, api: str, data: list) -> str | None:
    """The error message an HTTP client gets for ``data`` sent to ``api`` as is (gradio_client
    would upload a file it is given): the ``"error"`` of the last event."""
    event = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}).json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{event}", timeout=60) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    return json.loads(lines[-1].removeprefix("data:"))["error"]


def test_server_paths_for_files_get_a_sentence(served, client):
    """A file input given as a path on the server, not an upload, is refused with a sentence saying
    how to send a file (it was ``{"error": null}``, gradio_client's "has not enabled verbose error
    reporting")."""
    _, url, zoo, _ = served
    refusal = "send the file itself .*handle_file.* reads only files uploaded to it"
    with pytest.raises(Exception, match=refusal):
        client.predict(TINY, "/etc/passwd", None, 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match=refusal):
        client.predict(str(EXAMPLE_CLIP), "x", 1, 30, api_name="/create")
    file_data = {"meta": {"_type": "gradio.FileData"}}
    for path in (ROOT / "examples" / "motions" / "dab.bvh", zoo / "tiny" / "avatar.json", "http://127.0.0.1:9/x.bvh"):
        message = call_raw(url, "animate", [TINY, {**file_data, "path": str(path)}, None, 0.5, 10])
        assert message is not None and "reads only files uploaded to it" in message, path


def test_inputs_of_the_wrong_type_get_a_sentence(client):
    """None or text for a number, a number for text: one sentence naming the input and what it
    takes (Gradio answered with a bare error)."""
    cases = [
        ((TINY, None, "dab.bvh", None, 10), "/animate", "strength must be a number from 0 to 1, not None"),
        ((TINY, None, "dab.bvh", "half", 10), "/animate", "strength must be a number from 0 to 1, not 'half'"),
        ((TINY, None, "dab.bvh", 0.5, None), "/animate", "max_frames must be a number from 10 to 900, not None"),
        ((None, "me", None, 300), "/create", "minutes must be a number from 1 to 120, not None"),
        ((None, "me", 10, "300"), "/create", "max_frames must be a number from 30 to 1800, not '300'"),
    ]
    for args, api, sentence in cases:
        with pytest.raises(Exception, match=sentence.replace("(", r"\(")):
            client.predict(*args, api_name=api)


def test_numbers_are_bounded_on_the_server(served, monkeypatch):
    """The handlers keep numbers in the sliders' ranges themselves, whoever calls them: a frame
    count of 0 or 1e12, a strength of 1.5, NaN are refused before any work."""
    import ram_avatar.pipelines.cli as cli

    app = served[0]
    monkeypatch.setattr(cli, "create_avatar", no_job)
    for strength, frames in [(0.5, 0), (0.5, -5), (0.5, 1e12), (0.5, math.nan), (1.5, 10), (-0.1, 10), (math.nan, 10)]:
        with pytest.raises(Exception, match="(strength|max_frames) must be a number from"):
            app.animate(TINY, None, "dab.bvh", strength, frames, progress=no_progress)
    for minutes, frames in [(1e9, 30), (0, 30), (1, 0), (1, 10**9)]:
        with pytest.raises(Exception, match="(minutes|max_frames) must be a number from"):
            next(app.create(str(EXAMPLE_CLIP), "bounded", minutes, frames))
    with pytest.raises(Exception, match="strength must be a number from 0 to 1"):
        app.live(np.zeros((8, 8, 3), np.uint8), TINY, 5.0, None)


def test_uploads_are_checked_against_the_limits_before_any_work(served, client, monkeypatch):
    """A clip over a limit (file size, frame size) is refused when create is asked, before a job
    starts (the job used to start and fail later); a driving clip longer than the app animates is
    refused before it is tracked; a camera frame over the pixel limit before it is detected."""
    from gradio_client import handle_file

    import ram_avatar.pipelines.cli as cli

    app, _, _, outputs = served
    monkeypatch.setattr(cli, "create_avatar", no_job)
    folders = set(outputs.glob("r-*"))
    limits = [("VIDEO_FILE_MB", "0.01", "size of a video file"), ("VIDEO_PIXELS", "100", "pixels in one")]
    for name, value, what in limits:
        with monkeypatch.context() as patch:
            patch.setenv(f"RAM_AVATAR_LIMIT_{name}", value)
            with pytest.raises(Exception, match=f"dancer.mp4.*: {what}.*RAM_AVATAR_LIMIT_{name}"):
                client.predict(handle_file(str(EXAMPLE_CLIP)), "limited", 1, 30, api_name="/create")
    assert not app._jobs and set(outputs.glob("r-*")) == folders  # no job, no copy of the clip

    monkeypatch.setattr(app, "DRIVING_SECONDS", 2.0)
    with pytest.raises(Exception, match="dancer.mp4 lasts 4 s; the app drives avatars with clips of up to 2 s"):
        client.predict(TINY, handle_file(str(EXAMPLE_CLIP)), None, 0.5, 10, api_name="/animate")

    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_PIXELS", "1000")
    with pytest.raises(Exception, match="the camera frame: pixels in one video frame is 4096"):
        app.live(np.zeros((64, 64, 3), np.uint8), TINY, 0.5, None)


def test_limit_errors_are_the_visitors_to_fix(served, client, monkeypatch, caplog):
    """A LimitError from the library reaches the visitor as its own sentence, logged as one line
    (it read "failed on the server ... report it to the app's owner", with a traceback)."""
    from ram_avatar.limits import LimitError

    app = served[0]
    message = "tiny: size of one weights file of an avatar in MB is 5000, but must be at most 4096."

    def over_the_limit(key):  # noqa: ANN001, ANN202
        raise LimitError(message)

    monkeypatch.setattr(app, "get_pipeline", over_the_limit)
    caplog.set_level(logging.INFO, logger="ram_avatar.app")
    with pytest.raises(Exception) as raised:
        client.predict(TINY, None, "dab.bvh", 0.5, 10, api_name="/animate")
    assert str(raised.value) == message
    [record] = caplog.records
    assert record.levelname == "INFO" and record.exc_info is None


def test_no_server_path_reaches_a_visitor(served, client):
    """An avatar without a model card is named as such, not by its folder; the API's description
    (/gradio_api/info, view_api, the page's config) holds no server path either."""
    app, url, zoo, outputs = served
    bare = zoo / "bare"
    bare.mkdir()
    shutil.copyfile(zoo / "tiny" / "avatar.json", bare / "avatar.json")  # listed in the zoo, no README.md
    try:
        text = app.card("bare (local)")
    finally:
        shutil.rmtree(bare)
    assert "no model card" in text and str(zoo) not in text and "/" not in text

    api = client.view_api(print_info=False, return_format="str")
    served_texts = [httpx.get(f"{url}{page}").text for page in ("gradio_api/info", "config")]
    for folder in (ROOT, zoo, outputs):
        assert all(str(folder) not in text for text in (api, *served_texts)), folder


def test_result_folders_are_pruned_by_age_and_size(served, monkeypatch):
    """Result folders go when older than RESULT_HOURS, or oldest first past RESULTS_MB in all (they
    were only counted: old ones and big ones stayed); a running create job's folder stays."""
    app, _, _, outputs = served
    monkeypatch.setattr(app, "RESULTS_MB", 1.0)
    now = time.time()

    def result(name: str, hours_old: float, kb: int) -> Path:
        folder = outputs / name
        folder.mkdir(parents=True)
        (folder / "avatar.mp4").write_bytes(b"\0" * kb * 1024)
        os.utime(folder, (now - hours_old * 3600,) * 2)
        return folder

    stale = result("r-stale", app.RESULT_HOURS + 1, 1)
    running = result("r-running", app.RESULT_HOURS + 1, 1)
    older, newer = result("r-older", 2, 600), result("r-newer", 1, 600)  # together past 1 MB: the older goes
    monkeypatch.setitem(app._jobs, "running", {"name": "x", "out": running, "stage": "training"})
    fresh = app._result_dir()
    assert fresh.is_dir() and newer.is_dir() and running.is_dir()
    assert not stale.exists() and not older.exists()


def test_uploads_leave_gradio_cache(served, tmp_path):
    """Gradio's cache is pruned by age while the app runs, and of the app's files when it stops
    (uploads stayed there for good)."""
    app = served[0]
    motion = tmp_path / "motion.bvh"
    motion.write_text("HIERARCHY\n")
    demo, (_, url, _) = app.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True
    )
    try:
        with motion.open("rb") as f:
            [uploaded] = httpx.post(f"{url}gradio_api/upload", files={"files": f}).json()
        assert Path(uploaded).is_file()
    finally:
        demo.close()
    assert not Path(uploaded).exists()
    frequency, age = demo.delete_cache
    assert 0 < frequency <= age <= 24 * 3600


def test_outputs_have_the_umask_permissions(served):
    """The video, the overlay and the OOD plot are readable as the umask says (the plot was 0600)."""
    app = served[0]
    umask = os.umask(0)
    os.umask(umask)
    outputs = app.animate(TINY, None, "dab.bvh", 0.5, 10, progress=no_progress)[:3]
    assert all(outputs)
    for path in outputs:
        assert Path(path).stat().st_mode & 0o777 == 0o666 & ~umask, Path(path).name
