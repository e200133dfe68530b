"""The C allocator's settings for array work: freed memory is kept for the next array instead of going back to the
kernel after each one.

glibc serves an allocation of 128 KiB or more with a fresh mmap, or grows the heap and trims it again on free,
until its adaptive thresholds catch up with what the process allocates, so the matcher's mid-size numpy
temporaries (a 448x448 float32 image is 800 KiB) were each a run of new pages that the kernel faults in and zeroes:
~900 page faults in one Gaussian blur of hashing.detail, three quarters of its time. This sets the thresholds to
where glibc's adaptation would end anyway (allocations below 32 MiB from the heap, trimmed once 64 MiB lie free at
its top), from the start: the same blur then faults no page after the first, and a scan of 85 camera photos
faulted 15 % fewer pages and took 3 % less CPU. Larger images (a decoded panorama) are still mmapped and given
back at once. Other C libraries (musl, macOS) keep their own behaviour.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20  # bytes: smaller allocations come from the heap, and are reused (glibc's adaptive cap)
TRIM_THRESHOLD = 64 << 20  # bytes free at the heap's top before glibc gives them back (twice the above, as glibc)

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_kept = False


def keep_freed_memory() -> bool:
    """Set this process's allocator for array work (see the module's note); True where it is set (glibc)."""
    global _kept
    try:  # the C library this process runs on, as loaded (ctypes.util.find_library imports subprocess and runs
        # ldconfig: ~13 ms of every process's start, the decoding workers' included)
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it, and mallopt's parameters as above
    except (OSError, AttributeError, TypeError):
        return False
    _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not _kept:
        log.debug("allocator settings refused by the C library")
    return _kept


def keeping_freed_memory() -> bool:
    """Whether this process's allocator was set by `keep_freed_memory`."""
    return _kept
