"""The Gradio app through its API (gradio_client), launched in-process on a free port with a
tiny trained avatar in its zoo: animate returns playable videos and the OOD plot, bad files and
unknown avatars get clear messages, and only the app's own outputs are served."""

from __future__ import annotations

import importlib
import os
import socket
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from pipeline_fixture import make_tiny_avatar, wave_motion_file

pytest.importorskip("gradio")
pytest.importorskip("mediapipe", reason="the avatar's face map draws mediapipe's face mesh")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, anny_template):
    """(app module, url, zoo, outputs): the app on a free port, the tiny avatar in its zoo."""
    root = tmp_path_factory.mktemp("app")
    zoo, outputs = root / "zoo", root / "outputs"
    make_tiny_avatar(root / "build", anny_template).rename(zoo.mkdir() or zoo / "tiny")
    saved = {k: os.environ.get(k) for k in ("RAM_AVATAR_ZOO", "RAM_AVATAR_APP_OUTPUTS", "HF_HUB_OFFLINE")}
    os.environ.update(RAM_AVATAR_ZOO=str(zoo), RAM_AVATAR_APP_OUTPUTS=str(outputs), HF_HUB_OFFLINE="1")
    sys.path.insert(0, str(ROOT))
    app = importlib.reload(importlib.import_module("app"))  # reads the folders above at import
    demo, (_, url, _) = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    yield app, url, zoo, outputs
    demo.close()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False)


def test_animate_returns_playable_videos_and_the_ood_plot(served, client, tmp_path):
    from gradio_client import handle_file

    _, _, zoo, _ = served
    motion = wave_motion_file(tmp_path / "wave.npz", frames=10)
    video, overlay, plot, summary = client.predict(str(zoo / "tiny"), handle_file(str(motion)), None, 0.5, 10, api_name="/animate")
    for path in (video["video"] if isinstance(video, dict) else video, overlay["video"] if isinstance(overlay, dict) else overlay):
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 10 and frames[0].shape == (48, 48, 3)
    assert Path(plot).stat().st_size > 1000 and "MDA: median OOD score" in summary


def test_bad_inputs_get_clear_messages(served, client, tmp_path):
    from gradio_client import handle_file

    _, _, zoo, _ = served
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(Exception, match="Invalid file type|not a motion file"):  # Gradio checks file_types first
        client.predict(str(zoo / "tiny"), handle_file(str(text)), None, 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match="Give a motion"):
        client.predict(str(zoo / "tiny"), None, None, 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match="not in the list of choices|not in the zoo"):
        client.predict("/etc", None, "dab.bvh", 0.5, 10, api_name="/animate")
    broken = tmp_path / "broken.bvh"
    broken.write_text("HIERARCHY\nROOT x {\n")
    with pytest.raises(Exception, match="broken.bvh"):
        client.predict(str(zoo / "tiny"), handle_file(str(broken)), None, 0.5, 10, api_name="/animate")
    with pytest.raises(Exception, match="Invalid file type|not a video"):
        client.predict(handle_file(str(text)), "x", 1, 30, api_name="/create")


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
    _, _, zoo, _ = served
    assert "RamAvatarPipeline.from_pretrained" in client.predict(str(zoo / "tiny"), api_name="/card")
    with pytest.raises(Exception, match="Could not load someone/absent"):
        client.predict("someone/absent", api_name="/load_from_hub")
    with pytest.raises(Exception, match="token"):
        client.predict(str(zoo / "tiny"), "someone/tiny", "", True, api_name="/push")


def test_live_frames(served, shared_data):
    """The live handler (called directly: gradio_client does not speak the streaming protocol)."""
    from types import SimpleNamespace

    from ram_avatar.tracking.video import read_video

    app, _, zoo, _ = served
    request = SimpleNamespace(session_hash="test")
    assert app.live(np.full((96, 128, 3), 200, np.uint8), str(zoo / "tiny"), 0.5, request) is None  # nobody in view
    video = read_video(shared_data / "video" / "tfjs_synthetic_dance_static_576.mp4", max_frames=2, min_frames=1)
    for frame in video.frames:
        image = app.live(frame, str(zoo / "tiny"), 0.5, request)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8


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
    clip.write_bytes(b"\0" * 10)
    views = list(app.create(str(clip), "me", 1, 30))
    preview, _, status = views[-1]
    assert Path(preview).is_relative_to(app.OUTPUTS) and "done" in status and "me (local)" in status
    assert str(zoo / "me") in {key for _, key in app.zoo_entries()}
    with pytest.raises(Exception, match="exists"):
        next(app.create(str(clip), "me", 1, 30))
    with pytest.raises(Exception, match="letters, digits"):
        next(app.create(str(clip), "../escape", 1, 30))
