"""The debouncer with a fake clock, and the event handler that turns watchdog events into changes."""

from __future__ import annotations

import os
import queue
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

from dupwatch.daemon.config import IMAGE_SUFFIXES
from dupwatch.daemon.watcher import Change, ChangeKind, Debouncer, Handler


def _write(path: Path, data: bytes = b"x") -> str:
    path.write_bytes(data)
    return str(path)


def test_a_file_is_ready_once_it_held_still_for_the_settle_time(tmp_path: Path) -> None:
    d = Debouncer(settle=0.5)
    a = _write(tmp_path / "a.jpg")
    d.touch(a, now=10.0)
    assert d.ready(now=10.4) == [] and len(d) == 1
    assert d.ready(now=10.5) == [a] and len(d) == 0


def test_a_file_still_growing_starts_its_wait_again(tmp_path: Path) -> None:
    d = Debouncer(settle=0.5)
    a = _write(tmp_path / "a.jpg")
    d.touch(a, now=10.0)
    _write(tmp_path / "a.jpg", b"xx")  # grew without an event yet: seen when ready() re-checks the file
    assert d.ready(now=10.6) == []
    assert d.ready(now=11.0) == []
    assert d.ready(now=11.1) == [a]


def test_a_close_after_write_shortens_the_wait(tmp_path: Path) -> None:
    d = Debouncer(settle=0.5, closed_settle=0.05)
    a = _write(tmp_path / "a.jpg")
    d.touch(a, now=10.0)
    d.touch(a, closed=True, now=10.01)
    assert d.ready(now=10.06) == [a]


def test_defer_waits_a_full_settle_period_again(tmp_path: Path) -> None:
    d = Debouncer(settle=0.5)
    a = _write(tmp_path / "a.jpg")
    d.touch(a, now=10.0)
    assert d.ready(now=10.5) == [a]
    d.defer(a, now=12.0)  # decoded as truncated: still being written
    assert d.ready(now=12.4) == []
    assert d.ready(now=12.5) == [a]


def test_gone_files_discard_and_the_batch_limit(tmp_path: Path) -> None:
    d = Debouncer(settle=0.0)
    paths = [_write(tmp_path / f"{i}.jpg") for i in range(5)]
    for p in paths:
        d.touch(p, now=0.0)
    os.unlink(paths[0])
    d.discard(paths[1])
    d.touch(str(tmp_path / "never-existed.jpg"), now=0.0)
    first = d.ready(now=1.0, limit=2)
    assert first == paths[2:4] and d.ready(now=1.0) == paths[4:]
    sub = tmp_path / "sub"
    sub.mkdir()
    inner = _write(sub / "x.jpg")
    d.touch(inner, now=0.0)
    d.discard_under(str(sub))
    assert d.ready(now=1.0) == []


def test_events_become_changes_for_images_only() -> None:
    q: queue.Queue[Change] = queue.Queue()
    h = Handler(q, IMAGE_SUFFIXES, exclude=[Path("/q")])
    h.dispatch(FileCreatedEvent("/p/a.jpg"))
    h.dispatch(FileModifiedEvent("/p/notes.txt"))
    h.dispatch(FileCreatedEvent("/p/a.jpg.part"))
    h.dispatch(FileClosedEvent("/p/a.jpg"))
    h.dispatch(FileMovedEvent("/p/a.jpg.part", "/p/b.jpg"))
    h.dispatch(FileMovedEvent("/p/x.txt", "/p/y.txt"))
    h.dispatch(FileDeletedEvent("/p/b.jpg"))
    h.dispatch(DirMovedEvent("/p/old", "/p/new"))
    h.dispatch(DirDeletedEvent("/p/gone"))
    h.dispatch(FileCreatedEvent("/q/p/a.jpg"))  # inside the quarantine
    got = []
    while not q.empty():
        got.append(q.get_nowait())
    assert got == [
        Change(ChangeKind.CHANGED, "/p/a.jpg"),
        Change(ChangeKind.CHANGED, "/p/a.jpg", closed=True),
        Change(ChangeKind.MOVED, "/p/a.jpg.part", "/p/b.jpg"),
        Change(ChangeKind.DELETED, "/p/b.jpg"),
        Change(ChangeKind.MOVED, "/p/old", "/p/new", is_dir=True),
        Change(ChangeKind.DELETED, "/p/gone", is_dir=True),
    ]


def test_a_full_queue_asks_for_a_reconcile_instead_of_blocking() -> None:
    q: queue.Queue[Change] = queue.Queue(maxsize=2)
    h = Handler(q, IMAGE_SUFFIXES, exclude=[])
    for i in range(3):
        h.dispatch(FileCreatedEvent(f"/p/{i}.jpg"))
    assert q.qsize() == 2 and h.overflowed.is_set()
