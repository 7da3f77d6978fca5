"""The Gradio app through its API (gradio_client), launched in-process on a free port with a
tiny trained avatar in its zoo: animate returns playable videos and the OOD plot, says which
motion it used and reports each stage's progress; bad files and unknown avatars get clear
messages naming files by their upload name, unexpected errors a readable one (and a traceback in
the log only then); only the app's own outputs are served."""

from __future__ import annotations

import importlib
import logging
import socket
from pathlib import Path

import av
import numpy as np
import pytest
from pipeline_fixture import make_tiny_avatar, wave_motion_file

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny (local)"  # avatars are picked by name: their folders are server paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, anny_template):
    """(app module, url, zoo, outputs): the app on a free port, the tiny avatar in its zoo; the
    environment and sys.path are restored after."""
    root = tmp_path_factory.mktemp("app")
    zoo, outputs = root / "zoo", root / "outputs"
    make_tiny_avatar(root / "build", anny_template).rename(zoo.mkdir() or zoo / "tiny")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dict(
            RAM_AVATAR_ZOO=str(zoo), RAM_AVATAR_APP_OUTPUTS=str(outputs), HF_HUB_OFFLINE="1"
        ).items():
            patch.setenv(key, value)
        patch.syspath_prepend(str(ROOT))
        app = importlib.reload(importlib.import_module("app"))  # reads the folders above at import
        demo, (_, url, _) = app.launch(
            prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True
        )
        try:
            yield app, url, zoo, outputs
        finally:
            demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False)


def test_animate_returns_playable_videos_and_the_ood_plot(served, client, tmp_path):
    from gradio_client import handle_file

    motion = wave_motion_file(tmp_path / "wave.npz", frames=10)
    video, overlay, plot, summary = client.predict(TINY, handle_file(str(motion)), None, 0.5, 10, api_name="/animate")
    for path in (
        video["video"] if isinstance(video, dict) else video,
        overlay["video"] if isinstance(overlay, dict) else overlay,
    ):
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 10 and frames[0].shape == (48, 48, 3)
    assert Path(plot).stat().st_size > 1000 and "MDA: median OOD score" in summary
    assert "of your file `wave.npz`" in summary  # the motion used, by its upload name
    *_, summary = client.predict(TINY, None, "dab.bvh", 0.0, 10, api_name="/animate")
    assert "of the example motion `dab.bvh`" in summary


def test_bad_inputs_get_clear_messages(served, client, tmp_path):
    from gradio_client import handle_file

    _, _, zoo, _ = served
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(Exception, match="Invalid file type|not a motion file"):  # Gradio checks file_types first
        client.predict(TINY, handle_file(str(text)), None, 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match="Give a motion"):
        client.predict(TINY, None, None, 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match="not in the list of choices|not in the zoo") as raised:
        client.predict("/etc", None, "dab.bvh", 0.5, 10, api_name="/animate")
    assert TINY in str(raised.value) and str(zoo) not in str(
        raised.value
    )  # Gradio lists the choices: names, not folders
    broken = tmp_path / "broken.bvh"
    broken.write_text("HIERARCHY\nROOT x {\n")
    with pytest.raises(Exception, match="broken.bvh") as raised:
        client.predict(TINY, handle_file(str(broken)), None, 0.5, 10, api_name="/animate")
    assert "/" not in str(raised.value)  # the upload's name, not Gradio's temporary path
    with pytest.raises(Exception, match="Two motions are chosen, the file broken.bvh and the example dab.bvh"):
        client.predict(TINY, handle_file(str(broken)), "dab.bvh", 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match="Invalid file type|not a video"):
        client.predict(handle_file(str(text)), "x", 1, 30, api_name="/create")


def test_messages_name_files_by_their_upload_name(served, tmp_path):
    """A visitor's messages never show a server path: the upload under the name it was uploaded as
    (Gradio keeps it as the last part of ``<temp>/<hash>/name``), the app's files relative to the
    app, other absolute paths by their last part; URLs stay whole."""
    import gradio as gr

    app = served[0]
    upload = tmp_path / "gradio temp" / "0a1b2c3d4e5f" / "my dance.bvh"  # as Gradio stores an upload
    upload.parent.mkdir(parents=True)
    upload.write_text("not a bvh\n")
    with pytest.raises(gr.Error) as raised:
        app.animate(TINY, str(upload), None, 0.5, 10, progress=lambda *args, **kwargs: None)
    assert "my dance.bvh" in raised.value.message and "not a BVH file" in raised.value.message
    assert "0a1b2c3d4e5f" not in raised.value.message and "/" not in raised.value.message

    text = f"{app.ROOT}/examples/motions/dab.bvh and /srv/data/zoo/me/avatar.json; see https://huggingface.co/settings/tokens"
    assert (
        app.public_message(text)
        == "examples/motions/dab.bvh and avatar.json; see https://huggingface.co/settings/tokens"
    )
    assert app.public_message(f"{upload} is empty", upload) == "my dance.bvh is empty"


def test_animate_reports_each_stage(served):
    """The progress bar follows the pipeline's stages: the avatar, the motion, MDA, each frame."""
    app = served[0]
    reports = []
    app.animate(
        TINY, None, "dab.bvh", 0.5, 20, progress=lambda value, desc=None, unit=None: reports.append((desc, value))
    )
    stages = [desc for desc, _ in reports]
    assert stages[:2] == ["loading the avatar", "loading the motion"]
    mda = "aligning the motion (MDA), rendering the first frames"
    assert stages[2] == mda and mda not in stages[stages.index("rendering") :]  # the bar follows the frames once out
    assert [value for desc, value in reports if desc == "rendering"] == [(n, 20) for n in range(1, 21)]


def test_unexpected_errors_are_readable_and_logged_once(served, client, monkeypatch, caplog, capfd):
    """A bug or a broken install (the Space once lacked numba) reaches the visitor as a sentence
    and the log as one line with its traceback; a visitor's error logs one line, no traceback."""

    app = served[0]

    def broken_install(key):  # noqa: ANN001, ANN202
        raise ModuleNotFoundError("No module named 'numba'", name="numba")

    caplog.set_level(logging.INFO, logger="ram_avatar.app")
    with monkeypatch.context() as patch:
        patch.setattr(app, "get_pipeline", broken_install)
        with pytest.raises(Exception, match="installation is incomplete \\(no module 'numba'.*Tell the app's owner"):
            client.predict(TINY, None, "dab.bvh", 0.5, 10, api_name="/animate")
    [record] = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is not None and "Animate failed" in record.getMessage()

    caplog.clear()
    capfd.readouterr()
    with pytest.raises(Exception, match="Give a motion"):
        client.predict(TINY, None, None, 0.5, 10, api_name="/animate")
    [record] = caplog.records
    assert record.levelname == "INFO" and record.exc_info is None and "Give a motion" in record.getMessage()
    assert "Traceback" not in "".join(capfd.readouterr())  # Gradio prints none for it either


def test_create_offers_the_example_clip(served):
    """The Create tab's examples hold the bundled synthetic dancer clip, a playable video."""
    app = served[0]
    clip = app.EXAMPLE_CLIP
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 120
    datasets = [c for c in app.build_app().config["components"] if c["type"] == "dataset"]
    assert any("dancer.mp4" in str(c["props"].get("samples")) for c in datasets)


def test_serves_only_its_own_outputs(served):
    import httpx

    _, url, zoo, outputs = served
    for path in (ROOT / "app.py", zoo / "tiny" / "avatar.json", Path("/etc/passwd")):
        response = httpx.get(f"{url}gradio_api/file={path}")
        assert response.status_code in (403, 404), path
    rendered = next(outputs.glob("r-*/avatar.mp4"), None)
    if rendered is not None:  # after the animate test: its own output is served
        assert httpx.get(f"{url}gradio_api/file={rendered}").status_code == 200


def test_zoo_card_and_offline_hub(served, client):
    assert "RamAvatarPipeline.from_pretrained" in client.predict(TINY, api_name="/card")
    with pytest.raises(Exception, match="Could not load someone/absent"):
        client.predict("someone/absent", api_name="/load_from_hub")
    with pytest.raises(Exception, match="token"):
        client.predict(TINY, "someone/tiny", "", True, api_name="/push")


def test_live_frames(served, shared_data):
    """The live handler (called directly: gradio_client does not speak the streaming protocol): it
    hands each frame to the session's live loop and answers at once, with an avatar frame only
    when a new one was rendered (else gr.skip(): the page keeps the last one)."""
    import time
    from types import SimpleNamespace

    from ram_avatar.tracking.video import read_video

    app = served[0]
    request = SimpleNamespace(session_hash="test")
    assert app.live(np.full((96, 128, 3), 200, np.uint8), TINY, 0.5, request) == app.gr.skip()  # nothing rendered yet
    clip = shared_data / "video" / "tfjs_synthetic_dance_static_576.mp4"
    frames = read_video(clip, max_frames=2, min_frames=1).frames
    images = []
    for index in range(3000):  # rendered in the background: push frames until two avatar frames came back
        image = app.live(frames[index % len(frames)], TINY, 0.5, request)
        if not isinstance(image, dict):  # gr.skip() is a dict
            assert image.shape == (48, 48, 3) and image.dtype == np.uint8
            images.append(image)
        if len(images) == 2:
            break
        time.sleep(0.01)
    assert len(images) == 2
    for name in "abcd":  # more sessions than the app keeps live loops for: the oldest one's is closed
        app.live(frames[0], TINY, 0.5, SimpleNamespace(session_hash=name))
    assert list(app._live) == [*"abcd"] and len(app._live) == app.LIVE_LOOPS
    for name in "abcd":
        app.end_live(name)
    assert not app._live


def test_create_job_reports_and_adds_to_the_zoo(served, tmp_path, monkeypatch):
    """The Create tab's job plumbing, with the create step itself replaced by one that copies the
    tiny avatar (a real create tracks and trains for minutes: ``test_pipeline`` covers it)."""
    import shutil

    import ram_avatar.pipelines.cli as cli

    app, _, zoo, _ = served

    def fake_create(clip, out, *, work, trainer_hook, **kwargs):  # noqa: ANN001, ANN003, ANN202
        Path(work, "subject").mkdir(parents=True)
        shutil.copyfile(clip, Path(work, "subject", "preview.mp4"))  # tracking's preview appears first
        shutil.copytree(zoo / "tiny", out)

    monkeypatch.setattr(cli, "create_avatar", fake_create)
    clip = tmp_path / "me.mp4"
    shutil.copyfile(app.EXAMPLE_CLIP, clip)  # a real clip: create checks it against the limits first
    views = list(app.create(str(clip), "me", 1, 30))
    preview, _, status = views[-1]
    assert Path(preview).is_relative_to(app.OUTPUTS) and "done" in status and "me (local)" in status
    assert dict(app.zoo_entries())["me (local)"] == str(zoo / "me")
    with pytest.raises(Exception, match="exists"):
        next(app.create(str(clip), "me", 1, 30))
    with pytest.raises(Exception, match="letters, digits"):
        next(app.create(str(clip), "../escape", 1, 30))
