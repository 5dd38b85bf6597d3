"""Keep freed frame buffers inside the process instead of returning them to the kernel every frame.

A render allocates and frees the same handful of frame-sized buffers every frame: the decoded plate,
its model-space copy, the network's full-resolution activations, the output RGBA. glibc's default
allocator serves each of them with a fresh ``mmap`` and gives it back with ``munmap``, so every frame
faults in and zeroes hundreds of megabytes of new pages, and the reader, network and writer threads
each keep arenas of their own that are trimmed back to the kernel just as eagerly. In a virtual
machine a page fault is several microseconds. On the 2-core VM of ``bench/README.md`` this cost a
1080p render about 10% of its throughput (the OCIO conversion of one frame alone: 67 ms with fresh
pages, 33 ms with reused ones).

``retain_freed_memory`` switches glibc to one shared arena that serves large blocks from the heap and
keeps what is freed, so the next frame reuses warm pages. The process keeps its high-water mark
instead of shrinking between frames, which is what a render process wants anyway. It is process-wide,
so it runs once, only on glibc, and ``RVM_VFX_MALLOC=system`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

__all__ = ["ENV_VAR", "retain_freed_memory"]

log = logging.getLogger(__name__)

#: Set to ``system`` to keep glibc's defaults (e.g. when rvm-vfx is embedded in a long-lived host).
ENV_VAR = "RVM_VFX_MALLOC"

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# Free memory at the top of the heap beyond this is returned to the kernel: above any frame set.
_TRIM_THRESHOLD = 2**31 - 1

_lock = threading.Lock()
_state: bool | None = None


def retain_freed_memory() -> bool:
    """Tune glibc's allocator for frame-sized buffers, once per process.

    Returns whether the tuning is in effect. Anything that is not glibc (macOS, Windows, musl) and
    ``RVM_VFX_MALLOC=system`` return False and change nothing.
    """
    global _state
    with _lock:
        if _state is None:
            _state = _tune()
        return _state


def _tune() -> bool:
    if os.environ.get(ENV_VAR, "").strip().lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Order matters little, but each call must succeed for the combination to mean anything.
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    if not ok:
        log.debug("glibc mallopt refused the frame-buffer settings; allocator left as it was")
    return ok
