"""The bounds of ram_avatar.limits: overrides, bad overrides, NaN, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ram_avatar.limits import LIMITS, LimitError, check_limit, env_name, limit

README = Path(__file__).resolve().parents[1] / "README.md"


def test_a_value_over_a_limit_names_the_variable_that_raises_it(monkeypatch):
    with pytest.raises(LimitError, match="RAM_AVATAR_LIMIT_VIDEO_SECONDS"):
        check_limit("video_seconds", 7200, "talk.mp4")
    monkeypatch.setenv("RAM_AVATAR_LIMIT_VIDEO_SECONDS", "10000")
    check_limit("video_seconds", 7200, "talk.mp4")


def test_nan_is_outside_every_limit():
    with pytest.raises(LimitError, match="clip.mp4"):
        check_limit("fps", float("nan"), "clip.mp4")


def test_a_malformed_override_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RAM_AVATAR_LIMIT_FPS", "fast")
    with pytest.raises(LimitError, match="MIN,MAX"):
        limit("fps")


def test_the_readme_documents_every_limit_with_its_default():
    rows = dict(re.findall(r"^\| `(RAM_AVATAR_LIMIT_\w+)` \| ([^|]+) \|", README.read_text(), re.M))
    for name, (default, _) in LIMITS.items():
        assert env_name(name) in rows, f"README: no row for {env_name(name)}"
        written = [float(v) for v in rows[env_name(name)].split(",")]
        assert written == (list(default) if isinstance(default, tuple) else [default]), env_name(name)
