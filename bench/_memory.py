"""Peak-memory probes shared by every benchmark process (standard library only: the neural-tangents venv and the
project venv both import it).

A process's peak resident set is ``VmHWM`` in ``/proc/self/status``; writing 5 to ``/proc/self/clear_refs``
resets it to the current resident set, so a measurement can exclude imports and loading.
"""

from __future__ import annotations

import re


def status_kib(field_name: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{field_name}:\s+(\d+)", fh.read(), re.M).group(1))


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident set; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
