"""The Hugging Face Space (``spaces/``): its requirements are the package's dependencies (checked in
every run, so they cannot drift), its Gradio is the package's, and -- slow -- the Space assembled
exactly as ``spaces/README.md`` says, in a fresh virtual environment, animates the bundled example
through the app's API."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE_README = ROOT / "spaces" / "README.md"


def load_script():
    """``scripts/space_requirements.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("space_requirements", ROOT / "scripts" / "space_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_requirements_are_the_packages_dependencies(script, project):
    expected = script.render(project, SPACE_README.read_text(encoding="utf-8"))
    diff = script.check(expected, script.REQUIREMENTS)
    assert not diff, (
        f"spaces/requirements.txt is out of date with pyproject.toml: run python scripts/space_requirements.py\n{diff}"
    )
    wanted = {script.requirement_name(r) for r in project["project"]["dependencies"]} - {"gradio"}
    listed = {
        script.requirement_name(line) for line in expected.splitlines() if line and not line.startswith(("#", "-"))
    }
    assert listed == wanted and "--extra-index-url https://download.pytorch.org/whl/cpu" in expected  # CPU torch


def test_the_check_names_what_drifted(script, project, tmp_path):
    expected = script.render(project, SPACE_README.read_text(encoding="utf-8"))
    stale = tmp_path / "requirements.txt"
    stale.write_text("".join(line for line in expected.splitlines(True) if not line.startswith("numba")))
    assert "+numba>=" in script.check(expected, stale)
    assert script.check(expected, tmp_path / "absent.txt")  # a missing file is out of date too


def test_sdk_version_is_the_pinned_gradio(script, project):
    readme = SPACE_README.read_text(encoding="utf-8")
    pinned = next(r for r in project["project"]["dependencies"] if script.requirement_name(r) == "gradio")
    assert pinned == f"gradio=={script.sdk_version(readme)}"
    with pytest.raises(ValueError, match=r"gradio==.* sdk_version: 5\.0\.0"):
        script.render(project, re.sub(r"(?m)^sdk_version: .*$", "sdk_version: 5.0.0", readme))


def readme_block(containing: str) -> str:
    """The ```bash block of spaces/README.md that contains ``containing``."""
    blocks = re.findall(r"```bash\n(.*?)```", SPACE_README.read_text(encoding="utf-8"), re.S)
    return next(block for block in blocks if containing in block)


@pytest.mark.slow  # ~2-4 minutes on 2 CPU cores: a fresh virtual environment, then the app renders
@pytest.mark.skipif(shutil.which("python3.11") is None, reason="spaces/README.md runs the Space with python3.11")
def test_the_assembled_space_animates_the_example(tmp_path):
    """spaces/README.md to the letter: copy what it says into an empty folder, install what a Space
    installs (requirements.txt + Gradio at sdk_version) into a fresh venv, run ``python app.py``,
    and animate the bundled example through the app's API: a real mp4 with frames comes back."""
    import av
    import httpx
    from gradio_client import Client

    space, venv, log = tmp_path / "space", tmp_path / "venv", tmp_path / "space.log"
    space.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # PIP_RETRIES=0: where the CPU torch index cannot be reached (an offline mirror), pip moves on at once.
    env.update(
        SPACE=str(space),
        VENV=str(venv),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        PYTHONUNBUFFERED="1",
        PIP_RETRIES="0",
    )
    subprocess.run(["bash", "-euo", "pipefail", "-c", readme_block("cp -r")], cwd=ROOT, env=env, check=True)
    assert not list(space.rglob("__pycache__")) and (space / "README.md").read_text() == SPACE_README.read_text()

    start = time.perf_counter()
    with log.open("w") as out:
        server = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", readme_block("python app.py")],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:  # pip install, then the app starts
            assert server.poll() is None, f"the Space stopped:\n{log.read_text()[-3000:]}"
            assert time.perf_counter() - start < 900, (
                f"the Space did not come up in 15 minutes:\n{log.read_text()[-3000:]}"
            )
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(2)
        client = Client(url, verbose=False)
        video, _, plot, summary = client.predict(
            "dancer-rt256 (example)", None, "wave_hello.bvh", 0.5, 24, api_name="/animate"
        )
        with av.open(video["video"] if isinstance(video, dict) else video) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == 24 and frames[0].shape == (256, 256, 3) and frames[0].std() > 5  # a picture, not a blank
        assert Path(plot).stat().st_size > 1000 and "of the example motion `wave_hello.bvh`" in summary
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
