"""Live updates as server-sent events: the database's counts and the running daemon's figures, sent when they
change. The stream ends after `timeout` seconds and the browser's EventSource reconnects by itself (a proxy or a
sleeping laptop never leaves a dead stream behind)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from dupwatch.daemon.config import Config
from dupwatch.daemon.service import read_status
from dupwatch.daemon.store import Store

_DAEMON_FIGURES = ("pid", "state", "queue", "pending", "processed", "duplicates")


def snapshot(cfg: Config) -> dict[str, Any]:
    """What the page's status bar shows: counts from the database (and its generation), the daemon's figures."""
    with Store(cfg.db, readonly=True) as store:
        counts = store.read.counts()
        gen = store.gen
    daemon = read_status(cfg)
    return {
        "gen": gen,
        **counts,
        "daemon": None if daemon is None else {k: daemon.get(k) for k in _DAEMON_FIGURES},
    }


async def events(
    read: Callable[[], dict[str, Any]], interval: float = 1.0, timeout: float = 300.0
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    last: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snap = await run_in_threadpool(read)
        if snap != last:
            last = snap
            quiet_since = time.monotonic()
            yield f"event: status\ndata: {json.dumps(snap)}\n\n"
        elif time.monotonic() - quiet_since > 15:
            quiet_since = time.monotonic()
            yield ": still here\n\n"
        await asyncio.sleep(interval)
