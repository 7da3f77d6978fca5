"""A quiet first run: one line when a one-time cost starts, and third-party start-up noise kept off the terminal.

Two costs come once per installation and make the first run stall: building Anny's body cache
(``~/.cache/anny``, ~40 s; see ``ram_avatar.body.anny_template``) and compiling the CPU kernels
(Numba; cached in ``__pycache__`` beside their modules, so only a fresh install or an edited
kernel compiles). Each says so once, on stderr, when it really happens.

Warp (imported by Anny) probes for a CUDA driver when it initialises and, on a machine without
one, prints a warning from C straight to the process's stderr that no setting turns off:
:func:`native_stderr_to_logging` catches such lines and hands them to ``logging``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

_said: set[str] = set()
_listening = False  # the Numba compile listener is registered
_lock = threading.Lock()


def notice(message: str) -> None:
    """Print ``ram-avatar: message`` on stderr, once per process (later calls with it are silent)."""
    with _lock:
        if message in _said:
            return
        _said.add(message)
    print(f"ram-avatar: {message}", file=sys.stderr, flush=True)


def announce_kernel_compiles() -> None:
    """Have the first compilation of one of ram-avatar's Numba kernels say so (once per process).

    Numba broadcasts ``numba:compile`` only when it really compiles, not when it loads a kernel
    from its on-disk cache, so later runs stay silent. Every kernel module calls this on import;
    the listener is registered once.
    """
    global _listening
    from numba.core import event

    class CompileListener(event.Listener):
        def on_start(self, started: event.Event) -> None:
            if started.data["dispatcher"].py_func.__module__.split(".")[0] == "ram_avatar":
                notice("compiling the CPU kernels, once (~10 s; cached afterwards)")

        def on_end(self, ended: event.Event) -> None:
            pass

    with _lock:
        if not _listening:
            event.register("numba:compile", CompileListener())
            _listening = True


@contextlib.contextmanager
def native_stderr_to_logging(logger: str, level_of: Callable[[str], int]) -> Iterator[None]:
    """Catch what native code writes to file descriptor 2 inside the block, and log each line to
    ``logging.getLogger(logger)`` at ``level_of(line)`` (lines at WARNING or above stay visible
    without any logging set-up: Python's last-resort handler prints them on stderr).

    Python's own ``sys.stderr`` writes go to the same descriptor, so keep the block short.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no usable stderr (e.g. a windowed app): nothing to catch
        yield
        return
    log = logging.getLogger(logger)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:  # also when the block fails: what it printed may say why
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.log(level_of(line), line)
