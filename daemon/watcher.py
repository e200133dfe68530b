"""Filesystem events in, "this path is complete, look at it" out.

watchdog reports a file when it first appears, long before a camera import or a sync client has finished writing
it. The Debouncer holds each path until its size and mtime have been stable for `settle` seconds (an inotify
close-after-write shortens the wait); the pipeline's full decode is the final check, and a file that still decodes
as truncated while young is handed back here to wait longer. Temporary names of sync clients and browsers are
never candidates; their rename into place arrives as a move.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dupwatch.daemon.files import is_candidate, is_under

log = logging.getLogger(__name__)


class ChangeKind(StrEnum):
    CHANGED = "changed"  # created, written or closed: look at it once it holds still
    MOVED = "moved"
    DELETED = "deleted"


@dataclass
class Change:
    """One thing the service must act on."""

    kind: ChangeKind
    path: str
    dest: str | None = None
    is_dir: bool = False
    closed: bool = False  # an inotify close-after-write: the writer is done


class Handler(FileSystemEventHandler):
    """Turns watchdog events into Changes on a bounded queue; on overflow it raises a flag for a full reconcile
    instead of blocking the observer thread or growing without bound."""

    def __init__(self, changes: queue.Queue[Change], suffixes: Iterable[str], exclude: Iterable[Path]) -> None:
        self.changes = changes
        self.suffixes = tuple(suffixes)
        self.exclude = tuple(exclude)
        self.overflowed = threading.Event()

    def _put(self, change: Change) -> None:
        try:
            self.changes.put_nowait(change)
        except queue.Full:
            self.overflowed.set()

    def _wanted(self, path: str) -> bool:
        return is_candidate(path, self.suffixes, self.exclude)

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if event.event_type == "moved":
            dest = os.fsdecode(event.dest_path)
            if isinstance(event, DirMovedEvent):
                self._put(Change(ChangeKind.MOVED, src, dest, is_dir=True))
            elif self._wanted(src) or self._wanted(dest):
                self._put(Change(ChangeKind.MOVED, src, dest))
        elif event.event_type == "deleted":
            if event.is_directory or self._wanted(src):
                self._put(Change(ChangeKind.DELETED, src, is_dir=event.is_directory))
        elif event.event_type in ("created", "modified", "closed") and not event.is_directory and self._wanted(src):
            self._put(Change(ChangeKind.CHANGED, src, closed=isinstance(event, FileClosedEvent)))


def make_observer(polling: bool, interval: float = 2.0) -> BaseObserver:
    """inotify where it works; polling for network filesystems (NFS, SMB, SSHFS give no inotify events)."""
    return PollingObserver(timeout=interval) if polling else Observer()


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float  # when (size, mtime) last changed
    closed: bool


class Debouncer:
    """Holds paths until they stop changing. Not thread-safe: the service loop owns it."""

    def __init__(self, settle: float, closed_settle: float = 0.05) -> None:
        self.settle = settle
        self.closed_settle = closed_settle
        self.pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def touch(self, path: str, closed: bool = False, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        try:
            st = os.stat(path)
        except OSError:
            self.pending.pop(path, None)  # gone again (a temporary file, a quick delete)
            return
        old = self.pending.get(path)
        if old is None or (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.pending[path] = _Pending(st.st_size, st.st_mtime_ns, now, closed)
        elif closed:
            old.closed = True

    def defer(self, path: str, now: float | None = None) -> None:
        """A path that turned out not to be complete yet: wait a full settle period again from `now`."""
        self.touch(path, now=now)
        pending = self.pending.get(path)
        if pending is not None:
            pending.since = time.monotonic() if now is None else now
            pending.closed = False  # the close that shortened the wait is spent

    def discard(self, path: str) -> None:
        self.pending.pop(path, None)

    def discard_under(self, folder: str) -> None:
        for p in [p for p in self.pending if is_under(p, folder)]:
            del self.pending[p]

    def ready(self, now: float | None = None, limit: int | None = None) -> list[str]:
        """Paths whose size and mtime have not moved for the settle time (re-checked on disk now)."""
        now = time.monotonic() if now is None else now
        out: list[str] = []
        for path, p in list(self.pending.items()):
            wait = self.closed_settle if p.closed else self.settle
            if now - p.since < wait:
                continue
            try:
                st = os.stat(path)
            except OSError:
                del self.pending[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
                self.pending[path] = _Pending(st.st_size, st.st_mtime_ns, now, False)
                continue
            del self.pending[path]
            out.append(path)
            if limit is not None and len(out) >= limit:
                break
        return out
