"""A quiet first run: one-time costs say so once, when they really happen (Anny's cache is built,
the CPU kernels are compiled), and what Warp prints from C goes to ``logging``."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import pytest
import torch

from ram_avatar import notices


@pytest.fixture
def fresh_notices(monkeypatch):
    """Notices as in a new process: none said yet."""
    monkeypatch.setattr(notices, "_said", set())


def test_a_notice_is_said_once(fresh_notices, capsys):
    notices.notice("building something, once")
    notices.notice("building something, once")
    assert capsys.readouterr().err == "ram-avatar: building something, once\n"


def test_native_stderr_lines_go_to_logging_at_their_level(capfd, caplog):
    with caplog.at_level(logging.INFO, logger="warp"):
        with notices.native_stderr_to_logging(
            "warp", lambda line: logging.WARNING if "error" in line else logging.INFO
        ):
            os.write(2, b"Warp CUDA warning: no driver\nWarp CUDA error: real trouble\n")  # as C's fprintf does
    assert capfd.readouterr().err == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "Warp CUDA warning: no driver"),
        (logging.WARNING, "Warp CUDA error: real trouble"),
    ]


class _Stop(Exception):
    """Stands in for building Anny's body data (~40 s)."""


@pytest.mark.parametrize("cached", [False, True])
def test_building_annys_cache_is_announced_only_when_it_is_missing(
    cached, tmp_path, monkeypatch, request, fresh_notices, capsys
):
    import anny
    import anny.paths
    from anny.models.model_data import CURRENT_DATA_VERSION

    from ram_avatar.body.anny_template import AnnyTemplate

    if cached:
        (tmp_path / f"v{CURRENT_DATA_VERSION}").mkdir()
        (tmp_path / f"v{CURRENT_DATA_VERSION}" / "load_data_0123.safetensors").write_bytes(b"")
    previous = anny.paths.get_anny_cache_path()  # what ANNY_CACHE_DIR sets
    anny.paths.set_anny_cache_path(tmp_path)
    request.addfinalizer(lambda: anny.paths.set_anny_cache_path(previous))

    def build(**kwargs):
        raise _Stop

    monkeypatch.setattr(anny, "Anny", build)
    with pytest.raises(_Stop):
        AnnyTemplate()
    said = f"ram-avatar: building the Anny body cache in {tmp_path}, once (~40 s, more on a busy CPU)\n"
    assert capsys.readouterr().err == ("" if cached else said)


def test_compiling_the_kernels_is_announced_only_when_not_cached(tmp_path, monkeypatch, fresh_notices, capsys):
    """A kernel module loaded afresh with an empty Numba cache compiles (and says so once); loaded
    afresh again, it finds its kernel in the cache and says nothing."""
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))  # where cache=True kernels are kept
    said = "ram-avatar: compiling the CPU kernels, once (~10 s; cached afterwards)\n"
    for expected in (said, ""):
        monkeypatch.delitem(sys.modules, "ram_avatar.models.cpu_rgba", raising=False)
        module = importlib.import_module("ram_avatar.models.cpu_rgba")
        module.rgba_cpu(torch.zeros(1, 2, 2, 12), torch.zeros(1, 3, 2, 2), (4, 4))
        notices._said.clear()  # as a new process
        assert capsys.readouterr().err == expected
