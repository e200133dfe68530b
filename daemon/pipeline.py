"""The pipeline: paths in, fingerprints, matches, rows and groups out. The batch scan and the watcher both use it.

Per batch: decode and hash in worker processes (one core each), embed what is new in one CNN batch (in a thread,
while the batch before it is matched), match each file against everything before it (its batch mates included),
and write the batch, its pairs and the regrouping in one SQLite transaction. A crash therefore loses at most the
batches in hand, and a rerun picks them up again because unchanged files are recognised by (path, size, mtime_ns).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import numpy as np

from dupwatch.daemon.config import Config
from dupwatch.daemon.files import is_under, scan_tree
from dupwatch.daemon.index import EmbeddingIndex, IndexParams, catch_up, sync_index
from dupwatch.daemon.matcher import LocalDetail, Match, Matcher, Probe
from dupwatch.daemon.pool import decoding_pool
from dupwatch.daemon.records import FileRecord, FileRow, FileStatus, PairRecord, Tier
from dupwatch.daemon.store import KnownFile, Store
from dupwatch.daemon.workers import WORKER_DIED, Fingerprinter, timed_fingerprint
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.fingerprint import FileResult, Fingerprint, fingerprint_file
from dupwatch.hashing.geometry import structure

if TYPE_CHECKING:  # torch is imported only where the CNN runs, not by `status` or `report`
    from dupwatch.hashing.embedder import Embedder

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_GONE = (FileStatus.DELETED, FileStatus.RESOLVED)


@dataclass
class DuplicateMatch:
    path: str
    tier: Tier
    cosine: float
    hamming: int
    inliers: int | None


@dataclass
class Duplicate:
    """A file just recorded that has confirmed pairs: what the watcher logs, journals and hands to hooks."""

    path: str
    group: int | None
    matches: list[DuplicateMatch]


class PipelineHooks(Protocol):
    """What the pipeline tells its owner (the watcher's service) and asks of it."""

    def duplicates_found(self, found: list[Duplicate]) -> None:
        """New duplicates, after their batch has been committed."""

    def file_moved(self, src: str, dest: str) -> None:
        """A known file was renamed; its record, pairs and group followed it."""

    def defer_unreadable(self, result: FileResult) -> bool:
        """Whether an unreadable file might only be incomplete (it is then handed back, not recorded)."""


class NoHooks:
    """A batch scan: nobody to tell, nothing is still being written."""

    def duplicates_found(self, found: list[Duplicate]) -> None:
        pass

    def file_moved(self, src: str, dest: str) -> None:
        pass

    def defer_unreadable(self, result: FileResult) -> bool:
        return False


@dataclass
class ScanStats:
    seen: int = 0
    unchanged: int = 0
    fingerprinted: int = 0
    reused: int = 0  # embeddings taken from an identical file instead of the CNN
    moved: int = 0
    errors: int = 0
    deleted: int = 0
    pairs: int = 0
    deferred: list[str] = field(default_factory=list)  # not recorded yet: still being written (see PipelineHooks)
    skipped: dict[str, int] = field(default_factory=dict)  # files that are no image dupwatch reads, by suffix
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "embedding", "index", "database", "total"), 0.0)
    )

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass
class _Item:
    result: FileResult
    record: FileRecord | None = None  # existing row for this path
    embedding: np.ndarray | None = None
    local: np.ndarray | None = None
    reuse_from: FileRecord | None = None  # identical content already fingerprinted
    moved_from: FileRecord | None = None  # a deleted row with identical content: this is a rename
    twin_of: _Item | None = None  # identical content earlier in the same batch: its record is lent once written

    def reset(self) -> None:
        self.record = self.embedding = self.local = self.reuse_from = self.moved_from = self.twin_of = None


@dataclass
class _Ahead:
    """The CNN run on a batch's new files in a thread, while the batch before it is matched and written. Each
    file's (embedding, local map) is handed on as soon as its run of the network is done (`Embedder.batch_size`
    images), so the batch's own matching can start after its first run, not its last."""

    items: list[_Item]
    results: list[Future[tuple[np.ndarray, np.ndarray]]]  # one per item


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _InProcess(Executor):
    """workers = 0: fingerprint in this process (deterministic, for tests and tiny jobs)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        f: Future[T] = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # pragma: no cover - fingerprint_file does not raise for bad files
            f.set_exception(e)
        return f


class LocalDetails:
    """Stored files' (local descriptors, structure) for geometric verification: a cache of recent files (near
    duplicates usually arrive close together), else recomputed from disk. None when the file is gone or no longer
    holds the content that was fingerprinted."""

    def __init__(self, store: Store, embedder: Embedder, fingerprint: Callable[[str], FileResult], size: int) -> None:
        self.store = store
        self.embedder = embedder
        self.fingerprint = fingerprint
        self.size = size
        self._cache: OrderedDict[int, LocalDetail | None] = OrderedDict()

    def remember(self, file_id: int, detail: LocalDetail | None) -> None:
        self._cache[file_id] = detail
        self._cache.move_to_end(file_id)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def cached(self, file_id: int) -> LocalDetail | None:
        """What the cache holds for a file (None when it holds nothing), never read from disk."""
        return self._cache.get(file_id)

    def get(self, file_id: int) -> LocalDetail | None:
        if file_id in self._cache:
            self._cache.move_to_end(file_id)
            return self._cache[file_id]
        rec = self.store.files.get(file_id)
        detail = None
        if rec is not None and rec.status == FileStatus.OK:
            r = self.fingerprint(rec.path)
            if r.fingerprint is not None and r.fingerprint.content_hash == rec.content_hash:
                local = self.embedder.embed_with_local(r.fingerprint.pixels[None])[1][0]
                fp = r.fingerprint
                detail = LocalDetail(local, structure(fp.pixels), fp.detail, fp.texture)
        self.remember(file_id, detail)
        return detail


def open_pipeline(
    cfg: Config,
    store: Store,
    embedder: Embedder,
    hooks: PipelineHooks | None = None,
    fingerprinter: Fingerprinter = fingerprint_file,
) -> Pipeline:
    """The pipeline with its collaborators: the embedding index caught up with the store, the matcher over it."""
    params = IndexParams(
        dim=embedder.dim, model=embedder.name, m=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction, ef=cfg.hnsw_ef
    )
    dim = store.files.embedding_dim()
    if dim is not None and dim != embedder.dim:
        log.warning("database embeddings are %d-d, model gives %d-d: re-embedding everything", dim, embedder.dim)
    index = sync_index(store.files, store.gen, cfg.index_path, params)
    details = LocalDetails(store, embedder, partial(fingerprint_in_process, cfg), cfg.local_cache)
    matcher = Matcher(cfg, embedder, index, details.get, store.graph.copies_of)
    matcher.load_hashes(*store.files.live_hashes())
    return Pipeline(cfg, store, embedder, index, matcher, details, hooks or NoHooks(), fingerprinter)


def _leave_a_core(pending: Iterable[tuple[str, Future[Any]]], running: int) -> None:
    """Wait until fewer than `running` of the submitted files are still being decoded."""
    busy = [f for _, f in pending if not f.done()]
    if len(busy) >= running:
        wait(busy, return_when=FIRST_COMPLETED)


def fingerprint_in_process(cfg: Config, path: str) -> FileResult:
    """One file in this process, with the configured limits (the workers get the same through _results)."""
    return fingerprint_file(path, cfg.decode_side, cfg.max_pixels, cfg.max_file_bytes)


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        embedder: Embedder,
        index: EmbeddingIndex,
        matcher: Matcher,
        details: LocalDetails,
        hooks: PipelineHooks,
        fingerprinter: Fingerprinter = fingerprint_file,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.embedder = embedder
        self.index = index
        self.matcher = matcher
        self.details = details
        self.hooks = hooks
        self.fingerprinter = fingerprinter
        self._pool: Executor | None = None
        self._cnn: ThreadPoolExecutor | None = None  # runs the next batch's CNN while this one is matched
        self._dirty = False
        # files matched again although unchanged: their pairs were recorded before tiers, without detail evidence
        self._rematch: set[str] = set()
        # the store's generation the matcher is in step with, and the generations this pipeline wrote itself
        self._seen_gen = store.gen
        self._own_gens: set[int] = set()

    def _next_gen(self) -> int:
        gen = self.store.next_gen()
        self._own_gens.add(gen)
        return gen

    def catch_up(self) -> int:
        """Follow what another writer in this process did to the store (the web app's resolve and undo inside
        `watch --serve`): files that left the live set leave the matcher, files that came back (or changed) are
        put in again. Returns how many files were touched; 0, at the cost of one read, when nobody else wrote."""
        gen = self.store.gen
        since = self._seen_gen
        if gen == since:
            return 0
        foreign = any(g not in self._own_gens for g in range(since + 1, gen + 1))
        self._own_gens = {g for g in self._own_gens if g > gen}
        self._seen_gen = gen
        if not foreign:
            return 0
        gone, added = catch_up(self.index, self.store.files, since)  # as after a crash (index.sync_index)
        for fid in gone:
            self.matcher.remove(fid)  # its hashes
        self.matcher.load_hashes(*self.store.files.live_hashes(added))
        touched = len(gone) + len(added)
        if touched:
            self._dirty = True
            log.info("caught up with %d files changed by another writer", touched)
        return touched

    def reconfigure(self, cfg: Config) -> None:
        """A reloaded config: thresholds apply from the next file on."""
        self.cfg = cfg
        self.matcher.reconfigure(cfg)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.cfg.workers <= 0:
                self._pool = _InProcess()
            else:
                self._pool = decoding_pool(
                    self.cfg.workers, self.cfg.worker_memory_mb * (1 << 20), self.cfg.worker_nice
                )
        return self._pool

    def _restart_pool(self) -> None:
        """A worker died (the OOM killer, a crash inside a decoder): the pool is broken, start a new one."""
        log.warning("a decoding worker died; starting new workers")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def save_index(self) -> None:
        if self._dirty:
            self.index.gen = self.store.gen
            self.index.save(self.cfg.index_path)
            self._dirty = False

    def close(self) -> None:
        self.save_index()
        if self._cnn is not None:
            self._cnn.shutdown(wait=True, cancel_futures=True)
            self._cnn = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batch scan ----------------------------------------------------------------------------------------------

    def scan(
        self,
        roots: Sequence[Path],
        progress: Callable[[int, int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> ScanStats:
        """Bring the store in line with what is on disk under `roots`; `stop` is asked between batches."""
        stats = ScanStats()
        t0 = time.perf_counter()
        roots = [Path(r).resolve() for r in roots]
        with self.store.atomic():
            self.store.decisions.add_roots(str(r) for r in roots)
        quarantines = [Path(q) for q in self.store.journal.quarantines()]
        tree = scan_tree(roots, self.cfg.suffixes, exclude=quarantines)
        present = tree.paths
        stats.seen = len(present)
        stats.skipped = dict(tree.skipped)
        known = self.store.files.stat_index([str(r) for r in roots])
        here = set(present) | {folder for folder, _ in tree.unreadable}
        # a folder that cannot be listed says nothing about its files: they stay as they were
        vanished = [
            k.id
            for path, k in known.items()
            if k.status not in _GONE and path not in here and not tree.in_unreadable(path)
        ]
        if tree.unreadable:
            self._record_unreadable_folders(tree.unreadable)
            stats.errors += len(tree.unreadable)
        if vanished:
            self.forget(vanished)
            stats.deleted = len(vanished)
        legacy = self.store.graph.unverified_files() if self.store.meta.get("rematch_legacy") else set()
        todo = [p for p in present if p in legacy or self._changed(p, known.get(p))]
        self._rematch = {p for p in todo if p in legacy}
        stats.unchanged = len(present) - len(todo)
        if todo:
            self.embedder.preload()  # the CNN loads while the workers decode the first files
        done = 0
        if progress:
            progress(0, len(todo))
        finished = True
        for n in self.process(todo, stats):
            done += n
            if progress:
                progress(done, len(todo))
            if stop is not None and stop():
                log.info("scan stopped after %d of %d files", done, len(todo))
                finished = False
                break
        self._rematch = set()
        if legacy and finished:
            with self.store.atomic():
                self.store.meta.delete("rematch_legacy")
            log.info("pairs recorded before tiers were verified again: %d files", len(legacy))
        self.save_index()
        stats.seconds["total"] = time.perf_counter() - t0
        return stats

    def _record_unreadable_folders(self, folders: list[tuple[str, str]]) -> None:
        """Each folder that cannot be listed is reported under errors (a row of its own, status error) until it
        can be listed again."""
        with self.store.atomic():
            gen = self._next_gen()
            for folder, reason in folders:
                row = FileRow(
                    path=folder,
                    size=0,
                    mtime_ns=0,
                    status=FileStatus.ERROR,
                    error=f"cannot list this folder ({reason}); the files known in it are kept as they were",
                )
                self.store.files.save(row, gen)

    @staticmethod
    def _changed(path: str, known: KnownFile | None) -> bool:
        if known is None or known.status == FileStatus.DELETED:
            return True
        try:
            st = os.stat(path)
        except OSError:
            return True  # let the worker record why
        return (st.st_size, st.st_mtime_ns) != (known.size, known.mtime_ns)

    # -- the per-file work, in batches ---------------------------------------------------------------------------

    def _results(
        self, paths: Iterable[str], idle: Callable[[], None] = lambda: None
    ) -> Iterator[tuple[FileResult, float]]:
        """Fingerprints in input order, keeping the workers a few batches ahead of the CNN; `idle` is called
        before waiting for a file that is not decoded yet. A worker that dies takes the files in flight with it:
        the pool is rebuilt, the file in hand is tried once more on its own, and recorded as an error if that kills
        a worker too; the others are simply resubmitted."""
        fn = partial(
            timed_fingerprint,
            self.fingerprinter,
            max_side=self.cfg.decode_side,
            max_pixels=self.cfg.max_pixels,
            max_bytes=self.cfg.max_file_bytes,
        )
        ahead = max(4, self.cfg.batch_size * 2)
        pending: deque[tuple[str, Future[tuple[FileResult, float]]]] = deque()

        def submit(path: str) -> None:
            try:
                pending.append((path, self._executor().submit(fn, path)))
            except BrokenProcessPool:
                self._restart_pool()
                pending.append((path, self._executor().submit(fn, path)))

        def take() -> tuple[FileResult, float]:
            path, future = pending.popleft()
            if not future.done():
                idle()
            try:
                return future.result()
            except BrokenProcessPool:
                self._restart_pool()
            rest = [p for p, _ in pending]
            pending.clear()
            try:  # alone in a fresh pool: if this kills a worker again, it is the file's doing
                result = self._executor().submit(fn, path).result()
            except BrokenProcessPool:
                self._restart_pool()
                result = (FileResult(path, error=WORKER_DIED), 0.0)
            for p in rest:
                submit(p)
            return result

        for path in paths:
            if self.embedder.loading():  # torch's import and the network's load take a core of their own
                _leave_a_core(pending, max(1, self.cfg.workers - 1))
            submit(path)
            if len(pending) >= ahead:
                yield take()
        while pending:
            yield take()

    def in_quarantine(self, path: str) -> bool:
        """Is `path` inside a folder dupwatch moved files into? Nothing there is ever a live photo."""
        return any(is_under(path, q) for q in self.store.journal.quarantines())

    def process(self, paths: Iterable[str], stats: ScanStats) -> Iterator[int]:
        """Fingerprint, match and record `paths` (never one inside a quarantine); yields the number of files
        done after each batch. While one batch is matched and written, the CNN already runs on the next one (in a
        thread: torch and numpy release the GIL, so matching and the CNN each keep a core busy)."""
        held: tuple[list[_Item], _Ahead | None] | None = None
        early: list[int] = []  # batches written while the next one was still being decoded

        def idle() -> None:
            """Waiting for a file of the next batch: the batch in hand is written now rather than after it (the
            next batch's CNN cannot start before it is decoded anyway). Not while the CNN is still loading: the
            batch would wait for it, and the workers for more files to decode."""
            nonlocal held
            if held is not None and not self.embedder.loading():
                self._commit(*held, stats)
                early.append(len(held[0]))
                held = None

        for batch in self._batches(paths, stats, idle):
            ahead = self._embed_ahead(batch)
            yield from early
            early.clear()
            if held is not None:
                self._commit(*held, stats)
                yield len(held[0])
            held = (batch, ahead)
        yield from early
        if held is not None:
            self._commit(*held, stats)
            yield len(held[0])

    def _batches(
        self, paths: Iterable[str], stats: ScanStats, idle: Callable[[], None] = lambda: None
    ) -> Iterator[list[_Item]]:
        """Fingerprinted files in batches of the configured size (the last one smaller); `idle` as in _results."""
        batch: list[_Item] = []
        quarantines = self.store.journal.quarantines()
        paths = (p for p in paths if not any(is_under(p, q) for q in quarantines))
        for result, seconds in self._results(paths, idle):
            stats.add_time("decode", seconds)
            if result.fingerprint is None and self.hooks.defer_unreadable(result):
                stats.deferred.append(result.path)
                continue
            batch.append(_Item(result))
            if len(batch) >= self.cfg.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _embed_ahead(self, batch: list[_Item]) -> _Ahead | None:
        """Start the CNN on the files of `batch` that look new now. The batch before it is not written yet, so
        this is a guess: `_commit` plans again, uses what was computed for the files that still need it, and
        embeds any other itself."""
        items = self._plan(batch)
        if not items:
            return None
        if self._cnn is None:
            self._cnn = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dupwatch-cnn")
        ahead = _Ahead(items, [Future() for _ in items])
        self._cnn.submit(self._embed_runs, np.stack([_pixels(i.result) for i in items]), ahead.results)
        return ahead

    def _embed_runs(self, pixels: np.ndarray, results: list[Future[tuple[np.ndarray, np.ndarray]]]) -> None:
        """The CNN thread's work: `pixels` a run of the network at a time, each image's result set as it comes
        (a failure is set on every result still open)."""
        try:
            step = max(1, self.embedder.batch_size)  # asked here: a lazy embedder may still be loading
            for start in range(0, len(pixels), step):
                vecs, local = self.embedder.embed_with_local(pixels[start : start + step])
                for future, v, loc in zip(results[start : start + step], vecs, local, strict=True):
                    future.set_result((v, loc))
        except Exception as e:
            for future in results:
                if not future.done():
                    future.set_exception(e)

    def process_now(self, paths: Sequence[str]) -> ScanStats:
        """Process a few paths to completion (the watcher's entry point)."""
        stats = ScanStats()
        for _ in self.process(paths, stats):
            pass
        return stats

    def _plan(self, batch: list[_Item]) -> list[_Item]:
        """Look each file of `batch` up in the store: unchanged content, a rename, an identical copy whose
        embedding can be reused; returns the files that need the CNN."""
        to_embed: list[_Item] = []
        claimed: set[int] = set()
        first: dict[str, _Item] = {}  # content hash -> the batch's first new file with it
        for item in batch:
            item.reset()
            r = item.result
            item.record = self.store.files.by_path(r.path)
            fp = r.fingerprint
            if fp is None:
                continue
            rec = item.record
            same = rec is not None and rec.status == FileStatus.OK and rec.content_hash == fp.content_hash
            if same and r.path not in self._rematch:
                continue  # same bytes, new mtime: nothing to recompute
            known = self.store.files.by_content(fp.content_hash, FileStatus.OK, FileStatus.DELETED)
            # a rename: the same bytes under a path that is gone (its delete event may not have arrived yet)
            moved = [
                m
                for m in sorted(known, key=lambda m: m.status != FileStatus.DELETED)  # deleted rows first
                if m.id not in claimed and m.embedding is not None and not os.path.exists(m.path)
            ]
            if moved and rec is None:
                item.moved_from = moved[0]
                claimed.add(moved[0].id)
                continue
            for s in known:
                if s.path != r.path and self._lend(item, s):
                    break
            else:
                # an identical copy of a new file in this batch is what it would be in the next one: the
                # original's record lent, only its exact pairs (not a full match of its own)
                if (twin := first.setdefault(fp.content_hash, item)) is not item:
                    item.twin_of = twin
                else:
                    to_embed.append(item)
        return to_embed

    def _commit(self, batch: list[_Item], ahead: _Ahead | None, stats: ScanStats) -> None:
        t = time.perf_counter()
        to_embed = self._plan(batch)
        stats.add_time("database", time.perf_counter() - t)

        t = time.perf_counter()
        running = {} if ahead is None else dict(zip(map(id, ahead.items), ahead.results, strict=True))
        # the files to embed whose run of the CNN may still be under way: each is waited for just before its turn
        waiting = {id(i): running[id(i)] for i in to_embed if id(i) in running}
        if rest := [i for i in to_embed if id(i) not in waiting]:  # the guess missed them: embedded now
            vecs, local = self.embedder.embed_with_local(np.stack([_pixels(i.result) for i in rest]))
            for item, v, loc in zip(rest, vecs, local, strict=True):
                _embedded(item, v, loc)
        stats.add_time("embedding", time.perf_counter() - t)

        found: list[tuple[str, int, list[Match]]] = []
        with self.store.atomic():
            gen = self._next_gen()
            seeds: set[int] = set()
            for item in batch:
                if id(item) in waiting:
                    self._await_embedding(item, waiting[id(item)], stats)
                if item.twin_of is not None:
                    self._lend_twin(item, item.twin_of, stats)
                seeds.update(self._record(item, gen, stats, found))
            t = time.perf_counter()
            self.store.graph.regroup(seeds)
            stats.add_time("database", time.perf_counter() - t)
        self._dirty = True
        if found:
            self.hooks.duplicates_found(self._describe(found))
        for item in batch:
            if item.moved_from is not None:
                self.hooks.file_moved(item.moved_from.path, item.result.path)

    def _lend(self, item: _Item, s: FileRecord) -> bool:
        """`item` reuses stored record `s` of the same bytes (its embedding, not a CNN pass of its own) where `s`
        is a live file with an embedding of this network."""
        if s.status != FileStatus.OK or s.embedding is None or len(s.embedding) != self.embedder.dim:
            return False
        item.reuse_from, item.embedding = s, s.embedding.astype(np.float32)
        return True

    def _lend_twin(self, item: _Item, twin: _Item, stats: ScanStats) -> None:
        """`item` has the bytes of `twin`, recorded just before it in this batch: it reuses twin's record."""
        s = self.store.files.by_path(twin.result.path)
        assert item.result.fingerprint is not None
        if s is not None and s.content_hash == item.result.fingerprint.content_hash and self._lend(item, s):
            return
        t = time.perf_counter()  # not recorded as it was read (cannot happen today): embedded as any new file
        _embedded(item, *self._embed_alone(item))
        stats.add_time("embedding", time.perf_counter() - t)

    def _await_embedding(self, item: _Item, result: Future[tuple[np.ndarray, np.ndarray]], stats: ScanStats) -> None:
        t = time.perf_counter()
        try:
            v, loc = result.result()
        except Exception as e:  # embedded again here: a real failure then raises where it always did
            log.debug("the CNN run ahead failed (%s): embedding %s now", e, item.result.path)
            v, loc = self._embed_alone(item)
        _embedded(item, v, loc)
        stats.add_time("embedding", time.perf_counter() - t)

    def _embed_alone(self, item: _Item) -> tuple[np.ndarray, np.ndarray]:
        """One file's (embedding, local descriptors), in a CNN run of its own."""
        vecs, local = self.embedder.embed_with_local(_pixels(item.result)[None])
        return vecs[0], local[0]

    def _describe(self, found: list[tuple[str, int, list[Match]]]) -> list[Duplicate]:
        recs = self.store.files.many({m.other for _, _, ms in found for m in ms})
        return [
            Duplicate(
                path,
                self.store.graph.group_of(fid),
                [
                    DuplicateMatch(recs[m.other].path, m.tier, round(m.cosine, 4), m.hamming, m.inliers)
                    for m in matches
                    if m.other in recs
                ],
            )
            for path, fid, matches in found
        ]

    def _record(self, item: _Item, gen: int, stats: ScanStats, found: list[tuple[str, int, list[Match]]]) -> set[int]:
        """Write one file and its pairs (inside the batch transaction); returns the ids whose groups may change."""
        r, old = item.result, item.record
        fp = r.fingerprint
        if fp is None:  # unreadable now: it leaves the indexes and its group, the reason is kept
            stats.errors += 1
            log.warning("%s: %s", r.path, r.error)
            if old is not None:
                self.matcher.remove(old.id)
            t = time.perf_counter()
            fid = self.store.files.save(FileRow.from_result(r), gen, None if old is None else old.id)
            self.store.graph.drop_pairs([fid])
            stats.add_time("database", time.perf_counter() - t)
            return {fid}

        same = old is not None and old.status == FileStatus.OK and old.content_hash == fp.content_hash
        if same and old is not None and r.path not in self._rematch:
            self.store.files.touch(old.id, r.size, r.mtime_ns)
            return set()

        if item.moved_from is not None and item.moved_from.embedding is not None:
            src = item.moved_from
            t = time.perf_counter()
            retired = self.store.files.move(src.id, r.path, r.size, r.mtime_ns, gen)
            self.store.graph.drop_pairs(retired)
            stats.add_time("database", time.perf_counter() - t)
            t = time.perf_counter()
            self.matcher.add(src.id, self._probe(fp, item.moved_from.embedding.astype(np.float32), None))
            stats.add_time("index", time.perf_counter() - t)
            stats.moved += 1
            log.info("moved: %s -> %s", src.path, r.path)
            return {src.id, *retired}

        stats.fingerprinted += 1 if item.reuse_from is None else 0
        stats.reused += 1 if item.reuse_from is not None else 0
        assert item.embedding is not None
        probe = self._probe(fp, item.embedding, item.local)
        t = time.perf_counter()
        if old is not None:
            self.matcher.remove(old.id)
        fid = self.store.files.save(FileRow.from_result(r, item.embedding), gen, None if old is None else old.id)
        if old is not None:
            self.store.graph.drop_pairs([fid])  # new content: old evidence is void
        stats.add_time("database", time.perf_counter() - t)

        t = time.perf_counter()
        # an identical copy only needs its exact pairs: the original carries the near ones
        matches: list[Match] = [] if item.reuse_from is not None else self.matcher.find(probe, exclude=fid)
        # the same bytes, or the same decoded pixels in another format; a hard link to the same inode takes no
        # extra space: not a duplicate
        identical = self.store.files.by_content(fp.content_hash) + self.store.files.by_pixels(fp.pixel_hash)
        exact = {s.id for s in identical if s.id != fid and not _same_file(s.path, r.path)}
        self.matcher.add(fid, probe)
        local = item.local
        if local is None and item.reuse_from is not None:  # the same bytes: the same CNN local map
            original = self.details.cached(item.reuse_from.id)
            local = None if original is None else original.local
        if local is not None and probe.structure is not None:  # else read again from disk when verification asks
            self.details.remember(fid, LocalDetail(local, probe.structure, fp.detail, fp.texture))
        stats.add_time("index", time.perf_counter() - t)

        t = time.perf_counter()
        by_id = {m.other: m for m in matches}
        for other in exact:
            by_id[other] = Match(other, Tier.EXACT, 0, 1.0)
        for m in by_id.values():
            self.store.graph.add_pair(
                PairRecord(
                    fid, m.other, m.tier, m.hamming, m.cosine, m.view, m.inliers, m.overlap, m.changed, m.scattered
                )
            )
        stats.pairs += len(by_id)
        stats.add_time("database", time.perf_counter() - t)
        if by_id:
            similar = sum(m.tier == Tier.SIMILAR for m in by_id.values())
            log.info("%s: duplicate of %d file(s), similar to %d", r.path, len(by_id) - similar, similar)
            found.append((r.path, fid, list(by_id.values())))
        return {fid, *by_id}

    @staticmethod
    def _probe(fp: Fingerprint, embedding: np.ndarray, local: np.ndarray | None) -> Probe:
        return Probe(fp.ahash_views, fp.chash, embedding, local, fp.pixels, structure(fp.pixels), fp.detail, fp.texture)

    # -- removals ------------------------------------------------------------------------------------------------

    def moved(self, src: str, dest: str) -> bool:
        """A rename seen by the watcher: the record, fingerprints, pairs and index label follow the file.
        False when src is not a live record (the caller then treats dest as a new file). A file moved into a
        quarantine is never live again: it is forgotten (True: nothing more to do)."""
        if self.in_quarantine(dest):
            self.forget_paths([src])
            return True
        rec = self.store.files.by_path(src)
        if rec is None or rec.status != FileStatus.OK:
            return False
        try:
            st = os.stat(dest)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
            return False  # renamed and changed: fingerprint it again
        with self.store.atomic():
            retired = self.store.files.move(rec.id, dest, st.st_size, st.st_mtime_ns, self._next_gen())
            if retired:
                self.store.graph.drop_pairs(retired)
                self.store.graph.regroup(retired)
        self._dirty = True
        log.info("moved: %s -> %s", src, dest)
        self.hooks.file_moved(src, dest)
        return True

    def forget_paths(self, paths: Sequence[str]) -> int:
        """Files or whole folders gone from disk; returns how many records left the live set."""
        ids = []
        for p in paths:
            rec = self.store.files.by_path(p)
            if rec is not None and rec.status not in _GONE:
                ids.append(rec.id)
            else:
                ids += [k.id for k in self.store.files.stat_index([p]).values() if k.status not in _GONE]
        if ids:
            self.forget(ids)
        return len(ids)

    def forget(self, file_ids: Sequence[int]) -> None:
        """Files gone from disk: out of the indexes and their groups; rows stay so a rename can find them."""
        with self.store.atomic():
            gen = self._next_gen()
            self.store.files.set_status(file_ids, FileStatus.DELETED, gen)
            for fid in file_ids:
                self.matcher.remove(fid)
            self.store.graph.regroup(file_ids)
        self._dirty = True
        for fid in file_ids:
            log.info("gone: file #%d", fid)

    def probe_file(self, path: str) -> Probe:
        """Fingerprint and embed an image that need not be in the store (for `dupwatch query`)."""
        return self.examine(path)[0]

    def examine(self, path: str) -> tuple[Probe, Fingerprint]:
        """The probe of an image that need not be in the store, with its fingerprint (content and pixel hashes
        tell exact copies)."""
        r = fingerprint_in_process(self.cfg, path)
        if r.fingerprint is None:
            raise DecodeError(r.error or "unreadable")
        emb, local = self.embedder.embed_with_local(r.fingerprint.pixels[None])
        return self._probe(r.fingerprint, _as_stored(emb[0]), local[0]), r.fingerprint


def _as_stored(embedding: np.ndarray) -> np.ndarray:
    """An embedding as the store will hold it (float16), back in float32: what every comparison sees."""
    return embedding.astype(np.float16).astype(np.float32)


def _embedded(item: _Item, embedding: np.ndarray, local: np.ndarray) -> None:
    item.local = local
    item.embedding = _as_stored(embedding)


def _pixels(result: FileResult) -> np.ndarray:
    assert result.fingerprint is not None
    return result.fingerprint.pixels
