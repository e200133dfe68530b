"""`dupwatch watch`: reconcile the roots with the database, then follow filesystem events until told to stop.

One loop owns the pipeline (and so the database and the index); watchdog's thread only fills a bounded queue.
Every batch is one transaction, so `kill -9` at any moment loses at most the batch in hand, and the reconcile at
the next start picks it up again. SIGTERM finishes the batch in hand, saves the index and exits 0; SIGHUP reloads
the config's thresholds.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dupwatch.daemon.config import Config
from dupwatch.daemon.files import is_candidate, walk_images
from dupwatch.daemon.lock import WriterLock
from dupwatch.daemon.notify import notify, watchdog_period
from dupwatch.daemon.pipeline import Duplicate, open_pipeline
from dupwatch.daemon.records import Tier
from dupwatch.daemon.store import FileIdentity, Store
from dupwatch.daemon.watcher import Change, ChangeKind, Debouncer, Handler, make_observer
from dupwatch.hashing.fingerprint import FileResult
from dupwatch.hashing.processes import process_alive

if TYPE_CHECKING:  # torch is imported only where the CNN runs, not by `status` or `report`
    from dupwatch.hashing.embedder import Embedder

log = logging.getLogger(__name__)

HOOK_TIMEOUT_S = 30.0
DATABASE_CHECK_S = 2.0  # how often the database file's identity is checked


class ServiceState(StrEnum):
    STARTING = "starting"
    RECONCILING = "reconciling"
    WATCHING = "watching"
    STOPPING = "stopping"
    STOPPED = "stopped"


class HookLimiter:
    """At most `burst` hook runs per `window` seconds; what comes on top is counted, and told in one summary
    event ({"event": "duplicates", "count": N, "paths": [...]}) once the window has passed: a camera import of 300
    bursts gives a few notifications, not 300."""

    def __init__(self, burst: int = 5, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self._times: deque[float] = deque()
        self._held: list[str] = []

    def offer(self, event: dict[str, Any], run: Callable[[dict[str, Any]], None], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < self.burst:
            self._times.append(now)
            run(event)
        else:
            self._held.append(str(event.get("path", "")))

    def flush(self, run: Callable[[dict[str, Any]], None], now: float | None = None) -> None:
        """Called from the loop: the summary of what was held back, once the window since the last run passed."""
        now = time.monotonic() if now is None else now
        if self._held and (not self._times or now - self._times[-1] > self.window):
            held, self._held = self._held, []
            self._times.append(now)
            run({"event": "duplicates", "time": time.time(), "count": len(held), "paths": held[:100]})


@dataclass
class Status:
    """What `dupwatch status` shows of a running daemon (written beside the database every second)."""

    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    state: ServiceState = ServiceState.STARTING
    roots: list[str] = field(default_factory=list)
    queue: int = 0
    pending: int = 0
    processed: int = 0
    duplicates: int = 0
    reconciles: int = 0
    last_events: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, float] = field(default_factory=dict)  # the thresholds in force (they follow a reload)
    updated_at: float = 0.0


_SHOWN_SETTINGS = ("cosine_threshold", "verify_inliers", "grey_inliers", "settle_seconds", "reconcile_interval")


def _settings(cfg: Config) -> dict[str, float]:
    return {name: getattr(cfg, name) for name in _SHOWN_SETTINGS}


class Service:
    def __init__(
        self,
        cfg: Config,
        roots: list[Path],
        embedder: Embedder,
        polling: bool = False,
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self.cfg = cfg
        self.roots = [Path(r).resolve() for r in roots]
        self.embedder = embedder
        self.polling = polling
        self.reload_config = reload_config
        self.changes: queue.Queue[Change] = queue.Queue(maxsize=cfg.queue_size)
        self.debouncer = Debouncer(cfg.settle_seconds)
        self.status = Status(roots=[str(r) for r in self.roots], settings=_settings(cfg))
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._hooks: list[tuple[subprocess.Popen[bytes], float]] = []
        self._last_events: deque[dict[str, Any]] = deque(maxlen=20)
        self._young: dict[str, float] = {}  # path -> first time it failed to decode (still being written?)
        self._alive = time.monotonic()  # the main loop's last sign of life (for the watchdog heartbeat)
        # the hook is for duplicates new since the daemon started: not those its first reconcile finds
        self._hooks_live = False
        self._hook_limiter = HookLimiter()
        self._failure: str | None = None  # why the service stopped on its own

    # -- signals ---------------------------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def stop(self) -> None:
        self._stop.set()

    # -- the loop --------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped: 0 after a clean stop, 1 when the database went bad under us (systemd restarts)."""
        with WriterLock(self.cfg.lock_path):
            store = self.store = Store(self.cfg.db)
            self.identity = FileIdentity(self.cfg.db)
            with open_pipeline(self.cfg, store, self.embedder, hooks=self) as pipeline:
                self.pipeline = pipeline
                handler = Handler(self.changes, self.cfg.suffixes, [Path(q) for q in store.journal.quarantines()])
                observer = make_observer(self.polling)
                for root in self.roots:
                    observer.schedule(handler, str(root), recursive=True)
                try:
                    observer.start()
                except OSError as e:
                    if e.errno == 28:  # ENOSPC from inotify_add_watch
                        raise RuntimeError(
                            "inotify watch limit reached: raise fs.inotify.max_user_watches "
                            "(sysctl fs.inotify.max_user_watches=524288) or use --polling"
                        ) from None
                    raise
                # Ready as soon as events are being collected: the first reconcile of a large library can take far
                # longer than systemd's start timeout. Its progress goes to STATUS=, and the heartbeat thread keeps
                # WATCHDOG=1 flowing while the loop makes progress.
                self._set_state(ServiceState.RECONCILING)
                notify("STATUS=reconciling the folders with the database")
                notify("READY=1")
                heartbeat = self._start_heartbeat()
                try:
                    self._reconcile()
                    self._hooks_live = True
                    if not self._stop.is_set():
                        self._set_state(ServiceState.WATCHING)
                        self._loop(handler)
                except sqlite3.DatabaseError as e:
                    self._failure = f"database {self.cfg.db}: {e}"
                finally:
                    self._set_state(ServiceState.STOPPING)
                    notify("STOPPING=1")
                    self._stop.set()
                    if heartbeat is not None:
                        heartbeat.join(timeout=5)
                    observer.stop()
                    observer.join(timeout=5)
                    self._reap_hooks(wait=True)
            store.close()
        self._write_status(final=True)
        if self._failure:
            log.error("stopped: %s", self._failure)
            return 1
        log.info("stopped")
        return 0

    def _start_heartbeat(self) -> threading.Thread | None:
        """WATCHDOG=1 every half WatchdogSec, from a thread the work cannot block, but only while the main loop
        shows signs of life: a loop stuck for a whole WatchdogSec stops the pings, and systemd restarts us."""
        every = watchdog_period()
        if not every:
            return None

        def beat() -> None:
            while not self._stop.wait(every):
                if time.monotonic() - self._alive < 2 * every:
                    notify("WATCHDOG=1")

        t = threading.Thread(target=beat, name="dupwatch-heartbeat", daemon=True)
        t.start()
        return t

    def _check_database(self) -> None:
        problem = self.identity.problem()
        if problem is not None:
            self._failure = problem
            log.error("%s: stopping", problem)
            self._stop.set()

    def _loop(self, handler: Handler) -> None:
        cfg = self.cfg
        last_reconcile = last_save = last_status = last_check = time.monotonic()
        while not self._stop.is_set():
            self._alive = time.monotonic()
            self._drain(timeout=0.05)
            now = time.monotonic()
            ready = self.debouncer.ready(now, limit=cfg.batch_size * 4)
            if ready or now - last_status > 1.0:
                self.pipeline.catch_up()  # the web app's resolve/undo (watch --serve) reach the matcher
            if ready:
                stats = self.pipeline.process_now(ready)
                self.status.processed += len(ready) - len(stats.deferred)
                for p in stats.deferred:
                    self.debouncer.defer(p, now)
                for p in ready:
                    if p not in stats.deferred:
                        self._young.pop(p, None)
            if handler.overflowed.is_set() or now - last_reconcile > cfg.reconcile_interval:
                handler.overflowed.clear()
                self._reconcile()
                last_reconcile = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                self._reload_config()
            if now - last_save > cfg.index_save_interval:
                self.pipeline.save_index()
                last_save = now
            if now - last_check > DATABASE_CHECK_S:
                self._check_database()
                last_check = now
            if now - last_status > 1.0:
                self._write_status()
                last_status = now
            self._hook_limiter.flush(self._run_hook)
            self._reap_hooks()

    def _drain(self, timeout: float) -> None:
        try:
            change = self.changes.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._apply(change)
            try:
                change = self.changes.get_nowait()
            except queue.Empty:
                return

    def _apply(self, c: Change) -> None:
        if c.kind == ChangeKind.CHANGED:
            self.debouncer.touch(c.path, closed=c.closed)
        elif c.kind == ChangeKind.DELETED:
            if c.is_dir:
                self.debouncer.discard_under(c.path)
            else:
                self.debouncer.discard(c.path)
            n = self.pipeline.forget_paths([c.path])
            if n:
                self._event("deleted", c.path, files=n)
        elif c.kind == ChangeKind.MOVED:
            dest = c.dest or ""
            if c.is_dir:
                self.debouncer.discard_under(c.path)
                self._move_folder(c.path, dest)
                return
            self.debouncer.discard(c.path)
            wanted = is_candidate(dest, self.cfg.suffixes)
            if not (wanted and self.pipeline.moved(c.path, dest)):
                if self.pipeline.forget_paths([c.path]):
                    self._event("deleted", c.path)
                if wanted:  # e.g. a sync client's .part renamed into place
                    self.debouncer.touch(dest)

    def _move_folder(self, src: str, dest: str) -> None:
        if self.pipeline.in_quarantine(dest):  # moved into a quarantine: gone from the library
            n = self.pipeline.forget_paths([src])
            if n:
                self._event("deleted", src, files=n)
            return
        known = self.store.files.stat_index([src])
        for path in walk_images([Path(dest)], self.cfg.suffixes):
            old = os.path.join(src, os.path.relpath(path, dest))
            if not (old in known and self.pipeline.moved(old, path)):
                self.debouncer.touch(path)
        self.pipeline.forget_paths([src])  # whatever did not travel

    def _reconcile(self) -> None:
        """Bring the store in line with the disk: files added, changed, moved or removed while nobody watched."""
        self.status.reconciles += 1
        notify("STATUS=reconciling")

        last_check = time.monotonic()

        def progress(done: int, total: int) -> None:
            nonlocal last_check
            self._alive = time.monotonic()
            if self._alive - last_check > DATABASE_CHECK_S:  # a long reconcile checks the database file too
                self._check_database()
                last_check = self._alive
            notify(f"STATUS=reconciling: {done}/{total} files")
            self.status.pending = total - done
            self._write_status()

        stats = self.pipeline.scan(self.roots, progress=progress, stop=self._stop.is_set)
        for p in stats.deferred:
            self.debouncer.touch(p)
        log.info(
            "reconciled: %d files, %d fingerprinted, %d moved, %d gone, %d unreadable",
            *(stats.seen, stats.fingerprinted, stats.moved, stats.deleted, stats.errors),
        )
        notify(f"STATUS=watching {len(self.roots)} folders, {stats.seen} images")

    # -- the pipeline's hooks (PipelineHooks) ---------------------------------------------------------------------

    def defer_unreadable(self, r: FileResult) -> bool:
        """A young file that fails to decode is probably still being written: retry it, up to incomplete_grace."""
        if r.final:
            return False
        try:
            age = time.time() - os.stat(r.path).st_mtime
        except OSError:
            return False  # vanished: record it (and the delete event will follow)
        first = self._young.setdefault(r.path, time.monotonic())
        if age < self.cfg.incomplete_grace and time.monotonic() - first < self.cfg.incomplete_grace:
            log.debug("%s not readable yet (%s): waiting", r.path, r.error)
            return True
        self._young.pop(r.path, None)
        return False

    def _reload_config(self) -> None:
        if self.reload_config is None:
            return
        try:
            new = self.reload_config()
        except Exception as e:  # a broken config file must not stop the service
            log.error("config not reloaded: %s", e)
            return
        self.cfg = new.with_overrides(db=self.cfg.db)  # the database cannot change under a running daemon
        self.pipeline.reconfigure(self.cfg)
        self.debouncer.settle = self.cfg.settle_seconds
        self.status.settings = _settings(self.cfg)
        log.info("config reloaded")

    # -- reporting -------------------------------------------------------------------------------------------------

    def duplicates_found(self, found: list[Duplicate]) -> None:
        """A file with an exact or copy match is a duplicate (journaled, the hook runs); one with only similar
        matches (another shot of a scene) is journaled as `similar`, and no hook runs for it."""
        for d in found:
            duplicate = any(m.tier != Tier.SIMILAR for m in d.matches)
            kind = "duplicate" if duplicate else "similar"
            event = {"event": kind, "time": time.time(), **asdict(d)}
            others = ", ".join(f"{m.path} ({m.tier}, cosine {m.cosine:.3f})" for m in d.matches)
            log.info("%s: %s matches %s", kind, d.path, others)
            self._journal(event)
            if not duplicate:
                continue
            self.status.duplicates += 1
            if self.cfg.on_duplicate and self._hooks_live:
                self._hook_limiter.offer(event, self._run_hook)

    def file_moved(self, src: str, dest: str) -> None:
        self._event("moved", dest, source=src)

    # -- reporting -------------------------------------------------------------------------------------------------

    def _event(self, kind: str, path: str, **extra: object) -> None:
        self._journal({"event": kind, "time": time.time(), "path": path, **extra})

    def _journal(self, event: dict[str, Any]) -> None:
        self._last_events.append(event)
        with open(self.cfg.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    def _run_hook(self, event: dict[str, Any]) -> None:
        path = str(event.get("path", ""))
        try:
            proc = subprocess.Popen(  # through the shell, as users write it: 'cat >> log', 'notify-send "$X"'
                self.cfg.on_duplicate or "",
                shell=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "DUPWATCH_EVENT": str(event.get("event", "")), "DUPWATCH_PATH": path},
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(event).encode() + b"\n")
            proc.stdin.close()
            self._hooks.append((proc, time.monotonic()))
        except OSError as e:
            log.error("--on-duplicate hook failed to start: %s", e)

    def _reap_hooks(self, wait: bool = False) -> None:
        alive = []
        for proc, started in self._hooks:
            if wait:
                try:
                    proc.wait(timeout=max(0.1, HOOK_TIMEOUT_S - (time.monotonic() - started)))
                except subprocess.TimeoutExpired:
                    proc.kill()
            if proc.poll() is None:
                if time.monotonic() - started > HOOK_TIMEOUT_S:
                    log.error("hook pid %d ran over %.0fs: killed", proc.pid, HOOK_TIMEOUT_S)
                    proc.kill()
                alive.append((proc, started))
            elif proc.returncode:
                log.error("--on-duplicate hook exited with %d", proc.returncode)
        self._hooks = [] if wait else alive

    def _set_state(self, state: ServiceState) -> None:
        self.status.state = state
        self._write_status()

    def _write_status(self, final: bool = False) -> None:
        self.status.queue = self.changes.qsize()
        if self.status.state != ServiceState.RECONCILING:
            self.status.pending = len(self.debouncer)
        self.status.last_events = list(self._last_events)[-10:]
        self.status.updated_at = time.time()
        if final:
            self.status.state = ServiceState.STOPPED
        tmp = self.cfg.status_path.with_name(self.cfg.status_path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self.status)))
        os.replace(tmp, self.cfg.status_path)


def read_status(cfg: Config) -> dict[str, Any] | None:
    """The running daemon's status, or None when no daemon is running on this database."""
    try:
        data: dict[str, Any] = json.loads(cfg.status_path.read_text())
        if data.get("state") == ServiceState.STOPPED or not process_alive(int(data["pid"])):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data
