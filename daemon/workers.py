"""What runs inside a decoding worker process. Kept apart from the pipeline so that a worker imports only what
fingerprinting needs (Pillow, numpy, imagehash): never torch, which costs hundreds of MB and seconds per worker."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

from dupwatch.daemon.allocator import keep_freed_memory
from dupwatch.daemon.priority import one_math_thread
from dupwatch.hashing.fingerprint import FileResult

# What a decoding worker runs for one path: (path, max_side, max_pixels, max_bytes) -> its FileResult. A module-level
# function (workers receive it by reference); hashing.fingerprint.fingerprint_file unless a test injects a fault.
Fingerprinter = Callable[[str, int, int, int], FileResult]

WORKER_DIED = "the decoder died on this file twice (killed, e.g. out of memory, or crashed)"


def timed_fingerprint(
    fingerprinter: Fingerprinter, path: str, max_side: int, max_pixels: int, max_bytes: int
) -> tuple[FileResult, float]:
    t = time.perf_counter()
    try:
        r = fingerprinter(path, max_side, max_pixels, max_bytes)
    except MemoryError:  # over the worker's memory cap anywhere (reading, decoding, hashing)
        r = FileResult(path, error="image too large to decode in memory (the worker's memory limit)")
    return r, time.perf_counter() - t


def init_worker(headroom: int, nice: int = 0) -> None:
    """Start of each decoding worker. Its address space is capped at what it already maps plus `headroom` bytes,
    so that one huge image fails with a MemoryError (reported as 'too large to decode') instead of exhausting the
    machine (0 = no cap). It runs `nice` steps below the process it feeds: decoding ahead is what can wait, while
    that process's matching, one file after another, is the scan's serial part. On 2 cores, 85 camera photos took
    4.19 s with the workers level, 4.07 s 3 steps lower, 4.01 s 5 lower, 3.9 s 10 lower; but beside two busy
    processes a 202-file scan took 12.1, 13.3, 14.6 and 23 s: 3 keeps it within twice its quiet time. What C
    libraries print on stderr (libtiff's "More samples per pixel than can be decoded") is dropped: every problem
    with a file comes back as its result, and the user's terminal stays readable."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    keep_freed_memory()
    if nice > 0:
        os.nice(nice)
    limit_memory(headroom)
    one_math_thread()


def limit_memory(headroom: int) -> None:
    """Cap this process's address space at what it already maps plus `headroom` bytes (0 = no cap)."""
    if headroom > 0:
        limit = _mapped_bytes() + headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * resource.getpagesize()
