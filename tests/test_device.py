"""The process-wide CPU settings the applications make."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MB buffer twice; print the page faults of the second time.
_FAULTS = """
import resource, sys
import numpy as np
from ram_avatar.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for attempt in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(16 << 20, dtype=np.float32)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_freed_memory_is_reused_without_page_faults():
    faults = {mode: int(subprocess.check_output([sys.executable, "-c", _FAULTS, mode], text=True)) for mode in ("default", "keep")}
    assert faults["default"] > 10  # mapped afresh: 16k pages of 4 kB, or 32 huge ones of 2 MB
    assert faults["keep"] < faults["default"] / 10
