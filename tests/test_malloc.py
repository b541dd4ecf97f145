"""ntkit._malloc: with the raised thresholds a freed block-sized buffer is reused, not page-faulted in afresh.

Measured in fresh processes (the settings are process-wide): 20 allocate-touch-free cycles of a 40 MiB tensor
(above glibc's 32 MiB cap on its dynamic mmap threshold, so by default each one is a fresh mmap: 10,240 faults of
4 KiB per cycle). With ntkit's settings the heap keeps it after the first cycle.
"""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

SCRIPT = """
import resource, sys, torch
from ntkit import _malloc
applied = _malloc.keep_block_buffers()
torch.empty(1).fill_(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    t = torch.empty(40 << 20, dtype=torch.uint8)
    t.fill_(1)
    del t
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (40 << 20) // 4096


def _faults(env_value: str | None) -> tuple[bool, int]:
    import os

    env = dict(os.environ)
    env.pop("NTKIT_MALLOPT", None)
    if env_value is not None:
        env["NTKIT_MALLOPT"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_freed_buffers_are_reused_with_the_settings_and_faulted_without():
    applied, kept = _faults(None)
    assert applied and kept < 3 * PAGES  # the first cycle faults its pages in, the others reuse them
    applied, fresh = _faults("0")
    # every cycle a fresh mmap: 20 times the pages (or, with transparent huge pages, 20 times fewer huge ones),
    # so the count is many times the reused one whatever the page size
    assert not applied and fresh > 5 * max(kept, 1)


def test_release_free_memory_gives_freed_heap_back():
    script = """
import resource, threading, torch
from ntkit import _malloc
_malloc.keep_block_buffers()
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
held = [torch.ones(1 << 20, dtype=torch.float64) for _ in range(32)]  # 256 MiB in 8 MiB tensors, in the heap
del held  # 256 MiB free at the heap top: below TRIM_THRESHOLD, so glibc keeps it until asked
before = rss()
_malloc.release_free_memory()
print(before - rss())
"""
    import os

    env = {k: v for k, v in os.environ.items() if k != "NTKIT_MALLOPT"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout) > 128 * 1024  # KiB: most of the 256 MiB freed goes back
