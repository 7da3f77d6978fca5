"""The process-wide CPU settings the applications make."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocate, touch and free a 96 MB buffer twice, in the main thread or in another thread (as a
# stream's workers do); print the page faults of the second time.
_FAULTS = """
import resource, sys, threading
import numpy as np
from ram_avatar.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
def twice():
    for attempt in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = np.ones(24 << 20, dtype=np.float32)
        del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
if sys.argv[2] == "thread":
    worker = threading.Thread(target=twice)
    worker.start()
    worker.join()
else:
    twice()
print(faults[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_kept_freed_memory_is_reused_without_page_faults(where):
    faults = {
        mode: int(subprocess.check_output([sys.executable, "-c", _FAULTS, mode, where], text=True))
        for mode in ("default", "keep")
    }
    assert faults["default"] > 10  # mapped afresh: 24k pages of 4 kB, or 48 huge ones of 2 MB
    assert faults["keep"] < faults["default"] / 10
