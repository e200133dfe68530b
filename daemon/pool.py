"""The decoding workers' process pool: forked from a server that has their modules loaded, their results sent back
through a pipe that holds one whole.

- Workers are forked from a fork server, never from this process: it runs threads (torch's, the CNN's, the
  watcher's), and a fork copies whatever lock one of them holds at that instant. The server imports what a worker
  runs once, so each worker starts with it loaded.
- A worker's result carries the CNN's 224 px input and the 448 px detail image (~350 KB). Through a pipe of
  Linux's default 64 KiB it went in six pieces, and between two pieces the pool's reading thread in this process
  waited for the GIL, which the thread importing torch holds for long stretches: the worker sat blocked in its
  write for up to 90 ms while the CNN loaded (26 writes of over 1 ms, 0.25 s in all, in a scan of 85 camera
  photos). The result pipe is widened to 1 MiB (what Linux grants an unprivileged process): no write blocked for
  a millisecond, and the scan took ~2 % less time (interleaved runs). Where the system refuses, the pipe keeps
  its size and only that time is lost.
- A command that decodes starts the fork server first thing (`start_server`, from daemon.program), before it
  imports its own modules: the server's imports (numpy, Pillow, OpenCV: ~0.15 s) then run on a core that would
  otherwise wait for them, and the first worker forks the moment the first file is handed out. So this module
  imports nothing heavy until a pool is made.
"""

from __future__ import annotations

import fcntl
import logging
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.queues import SimpleQueue

log = logging.getLogger(__name__)

RESULT_PIPE_BYTES = 1 << 20
# what the server imports before it forks a worker
PRELOAD = ["dupwatch.daemon.workers", "dupwatch.hashing.fingerprint"]


def start_server() -> None:
    """Start the fork server, with what a worker runs loaded, now rather than at the first file (it imports in a
    process of its own: this returns at once). The pools made later fork their workers from it."""
    forkserver.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def widen_pipe(fd: int, size: int = RESULT_PIPE_BYTES) -> None:
    """Ask for a pipe of at least `size` bytes; where that is refused, it keeps the size it has."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is None:
        return
    try:
        fcntl.fcntl(fd, set_size, size)
    except OSError as e:  # over /proc/sys/fs/pipe-max-size, or the user's pipe pages are spent
        log.debug("result pipe not widened to %d bytes: %s", size, e)


class _WideResults(ForkServerContext):
    """The fork server's context, whose SimpleQueue (what ProcessPoolExecutor makes for its results, one per
    pool) is a widened pipe."""

    def SimpleQueue(self) -> SimpleQueue[object]:
        queue = super().SimpleQueue()
        widen_pipe(queue._reader.fileno())  # type: ignore[attr-defined]  # the queue's pipe, both ends one buffer
        return queue


def decoding_context() -> ForkServerContext:
    """The fork server, with what a worker runs loaded, and a result pipe that holds a result whole."""
    ctx = _WideResults()
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def decoding_pool(workers: int, memory_limit: int, nice: int) -> ProcessPoolExecutor:
    """`workers` processes, each capped at its start's mapping plus `memory_limit` bytes and `nice` steps below this
    process (daemon.workers.init_worker)."""
    from concurrent.futures import ProcessPoolExecutor

    from dupwatch.daemon.workers import init_worker

    ctx = decoding_context()
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(memory_limit, nice)
    )
