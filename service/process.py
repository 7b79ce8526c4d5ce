"""Process-wide tuning of the allocator and the garbage collector for a serving process.

Both are decided once per process, by the server's entry point (never by the app, so
tests and tools that build apps keep the interpreter's defaults).
"""

from __future__ import annotations

import ctypes
import gc
import logging

logger = logging.getLogger(__name__)

#: glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations from this size up get their own mapping, returned to the OS when freed:
#: large-image buffers; a 640x480 photo's (1.2 MB) stay on the heap, reused.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
#: Free memory at the top of a heap kept for reuse before it is given back.
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024


def return_large_frees_to_the_os() -> None:
    """Keep large decode buffers from lingering in the heap after they are freed (glibc).

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB), so
    after the first large image, Pillow's 16 MiB image blocks and numpy buffers come
    from per-thread heaps that keep the memory after ``free``: RSS then grows past what
    the decode budget holds (measured: 716 MiB still resident after a 40 MP palette PNG,
    idle 407). A fixed threshold sends them back to ``mmap`` (395 MiB after the same
    image). Fixing it also freezes the trim threshold at 128 KiB, which made every
    photo's decode shrink and regrow the heap (4.1 -> 6.8 ms per 640x480 JPEG), hence
    the trim threshold set too (4.4 ms, the same as glibc's defaults).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): their allocators do not behave this way
        return
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    if not ok:
        logger.warning("mallopt failed; freed decode memory may linger in the heap")


#: Net allocations of container objects between young-generation collections
#: (CPython's default: 700). Serving allocates many short-lived ones per request (heads,
#: futures, the answer's models); fewer, larger young collections cost less in all, and
#: the older generations are collected correspondingly less often.
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Move every object alive after start-up out of the collector's sight, and collect
    the young generation less often.

    The modules, the app, the settings and the loaded models' Python objects live as
    long as the process; without this, each full collection walks all of them again
    (measured: ``gc_collect_main`` was 0.4 CPU-ms per served image at 16 in flight, the
    largest native frame beside the engine after Pillow and libjpeg). Objects created
    later (requests, models loaded later) are collected as usual. This is
    ``gc.freeze()`` as Instagram uses it for the same reason in long-lived servers.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    logger.debug("froze %d start-up objects out of the garbage collector", gc.get_freeze_count())
