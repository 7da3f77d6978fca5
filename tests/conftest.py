"""Shared fixtures: the expensive body template is built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def anny_template():
    """The default Anny template (first build ever: ~40 s to fill ~/.cache/anny; then ~1 s)."""
    from ram_avatar.body import load_template

    return load_template("anny")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project; tests that need it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent (a user's fresh clone): data-driven test skipped")
    return SHARED.resolve()
