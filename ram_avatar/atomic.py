"""Folders written whole or not at all: built under a hidden name beside the target, then renamed."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def replace_folder(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; ``target`` only ever holds the complete old or new folder."""
    if not target.exists():
        os.rename(staging, target)
        return
    # POSIX cannot rename a folder over a non-empty one, so move the old one aside first.
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target`` to write into; on success it replaces
    ``target``, on any error it is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.writing-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
