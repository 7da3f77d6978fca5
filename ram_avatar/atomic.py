"""Outputs written whole or not at all, with no litter and the umask's permissions.

Every file or folder ram-avatar writes is built under a hidden name beside its target,
``.NAME.partial-PID-XXXXXXXX`` (the same file system, so the final rename is atomic), and renamed
into place only when complete. On any error, Ctrl-C included, the partial is removed; one left by a
killed run (its process is gone) is removed by the next write to the same target. Outputs get the
mode a plain ``open`` gives (``0o666 & ~umask``), whatever made the temporary file.

:func:`check_output` tells, before any long work, whether an output path can be written at all.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"
OLD = ".old"  # suffix of a replaced folder moved aside (see replace_folder)
SHARED = ".writing-"  # see shared_partial


def partial_path(target: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh hidden name beside ``target`` for this process to build it under; ``suffix`` keeps
    an extension that a writer picks its format by (e.g. ``.mp4``)."""
    target = Path(target)
    return target.parent / f".{target.name}{PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def shared_partial(target: str | os.PathLike, tag: str | int) -> Path:
    """A hidden name beside ``target`` that every process of one distributed run computes alike
    (:func:`partial_path`'s holds the process id), for a folder they all write into (Accelerate's
    ``save_state``: each process saves its own random state), then moved into place with
    :func:`replace_folder`; ``tag`` tells one run's saves apart (e.g. the step). Being no process's
    own, such a folder left by a killed run is removed by :func:`remove_shared_partials`."""
    target = Path(target)
    return target.parent / f".{target.name}{SHARED}{tag}"


def remove_shared_partials(target: str | os.PathLike) -> None:
    """Remove what runs killed while saving ``target`` left: its :func:`shared_partial` folders
    (call it before any process of this run saves one) and, as :func:`remove_stale` does, the
    partials of processes gone; a complete old folder moved aside is put back."""
    target = Path(target)
    if target.parent.is_dir():
        for entry in target.parent.glob(f".{target.name}{SHARED}*"):
            _remove(entry)
    remove_stale(target)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: never take a partial for stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        pass
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(target: str | os.PathLike) -> None:
    """Remove the partial files and folders of ``target`` that runs killed before they could
    clean up left behind. A complete old folder moved aside by a run killed while replacing
    ``target`` is put back when ``target`` is missing, never deleted."""
    target = Path(target)
    prefix = f".{target.name}{PARTIAL}"
    try:
        entries = [entry for entry in target.parent.iterdir() if entry.name.startswith(prefix)]
    except OSError:  # no folder yet (nothing to clean), or one we cannot list: the write will say
        return
    for entry in entries:
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.name.endswith(OLD) and not target.exists() and not target.is_symlink():
            os.rename(entry, target)
        else:
            _remove(entry)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, which races with other threads)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def naming_target(error: OSError, target: str | os.PathLike) -> OSError:
    """``error`` as the user should see it: about ``target``, not its hidden partial name (nor no
    name at all). Other errors are returned as they are."""
    target, name = Path(target), error.filename
    ours = name is None or Path(os.fsdecode(name)).name.startswith(f".{target.name}{PARTIAL}")
    if error.errno is None or not ours or error.filename2 is not None:
        return error
    return OSError(error.errno, error.strerror, str(target))  # the subclass follows errno


@contextmanager
def staged_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden path beside ``target`` (with its extension, for writers that go by it) to
    write the whole file to; on success it gets :func:`output_mode` and replaces ``target``, on any
    error it is removed and ``target`` is left as it was. An I/O error about the temporary name is
    raised naming ``target``."""
    target = Path(target)
    remove_stale(target)
    tmp = partial_path(target, target.suffix)
    try:
        yield tmp
        os.chmod(tmp, output_mode())
        os.replace(tmp, target)
    except OSError as error:
        _remove(tmp)
        raise naming_target(error, target) from None
    except BaseException:
        _remove(tmp)
        raise


def replace_folder(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; ``target`` only ever holds the complete old or new folder."""
    if not target.exists():
        os.rename(staging, target)
        return
    # POSIX cannot rename a folder over a non-empty one, so move the old one aside first; a run
    # killed right here leaves it under a partial name that remove_stale puts back.
    old = partial_path(target, OLD)
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
    remove_stale(target)
    staging = partial_path(target)
    staging.mkdir()
    try:
        yield staging
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def staged_files(folder: str | os.PathLike, last: str) -> Iterator[Path]:
    """Yield an empty hidden folder inside ``folder`` to write files into; on success each is
    renamed into ``folder`` (with :func:`output_mode`), the file named ``last`` after all others, so
    that a reader who finds it finds the rest whole and of the same write (e.g. a model's config
    before its weights); on any error the hidden folder is removed and ``folder`` left as it was.
    For a folder that holds more than these files (a training run's checkpoint beside its model),
    which :func:`staged_folder` would replace whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder / last)
    staging = partial_path(folder / last)
    staging.mkdir()
    try:
        yield staging
        for file in sorted(staging.iterdir(), key=lambda file: file.name == last):
            os.chmod(file, output_mode())
            os.replace(file, folder / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def removed_if_new(folder: str | os.PathLike) -> Iterator[None]:
    """On any error, remove ``folder`` and those of its parents that this run made, as long as
    they are empty (what the run kept in them stays)."""
    folder = Path(folder)
    new = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in new:
            try:
                path.rmdir()
            except FileNotFoundError:  # never made
                continue
            except OSError:  # not empty: it and its parents stay
                break
        raise


def check_output(path: str | os.PathLike, kind: str = "file") -> Path:
    """Check, before any long work, that ``path`` can be written as a ``kind`` (``"file"`` or
    ``"folder"``): it is not a folder where a file is asked for (or a file where a folder is),
    its nearest existing folder is writable, and no file sits where a folder must be made.
    Creates nothing; raises :class:`IsADirectoryError`, :class:`NotADirectoryError` or
    :class:`PermissionError` with a message that names ``path`` and says what to do."""
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise IsADirectoryError(f"the output {path} is a folder: give a file name (or remove the folder)")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"the output folder {path} is a file: choose another name (or remove the file)")
    folder = path  # an existing output folder is written into; else its nearest existing parent
    if not path.is_dir():
        for folder in path.parents:
            if folder.is_dir():
                break
            if folder.exists() or folder.is_symlink():
                raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(folder) else "is not writable"
        raise PermissionError(f"cannot write {path}: the folder {folder} {why}; choose another path")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
