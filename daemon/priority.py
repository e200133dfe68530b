"""Running at low priority: the daemon must not compete with the user's own work for the CPU or the disk.

The systemd units set Nice= and IOSchedulingClass=idle; `dupwatch watch` started by hand (or by another
supervisor) lowers itself to the same levels. Only lowered, never raised: under the unit it is already there.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# ioprio_set(2): who = a process, class idle (3) in the top bits of the priority value
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13


def lower_priority(nice: int, io_idle: bool) -> list[str]:
    """Set this process's nice value to at least `nice` and, with `io_idle`, its I/O class to idle (Linux); the
    decoding workers started afterwards inherit both. Returns what was changed, for the log."""
    done = []
    if nice > 0:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            done.append(f"nice {current} -> {nice}")
    number = _SYS_IOPRIO_SET.get(platform.machine())
    if io_idle and number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT) == 0:
            done.append("I/O class idle")
        else:
            log.debug("I/O priority unchanged: %s", os.strerror(ctypes.get_errno()))
    return done


def one_math_thread() -> None:
    """One thread each for the libraries that do the matching's arithmetic: numpy's BLAS and OpenCV.

    numpy's BLAS (OpenBLAS) runs a thread per core, spinning while it waits; beside the CNN's threads and the
    decode workers that oversubscribes the cores. The matching's small matrices gain nothing from more threads,
    and under one other busy process a scan of 202 files took 25 s with them and 17 s without (README, Speed).
    OpenCV's pool (hashing.detail's warps and blurs) likewise: the matching is one thread among dupwatch's own.
    Where numpy's OpenBLAS was loaded after the package asked for one thread (dupwatch.daemon), as in every dupwatch
    process and decoding worker, threadpoolctl is not needed (it inspected every loaded library: ~9 ms of each
    process's start)."""
    import cv2

    cv2.setNumThreads(1)
    if not _blas_single_from_the_start():
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")


def _blas_single_from_the_start() -> bool:
    import numpy as np

    from dupwatch import daemon

    config = getattr(np.__config__, "CONFIG", {})  # numpy >= 1.26 says which BLAS it was built with
    blas = config.get("Build Dependencies", {}).get("blas", {}).get("name", "")
    return daemon.ONE_BLAS_THREAD_FROM_THE_START and "openblas" in str(blas).lower()
