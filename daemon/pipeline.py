"""The pipeline: paths in, fingerprints, matches, rows and groups out. The batch scan and the watcher both use it.

Per batch: decode and hash in worker processes (one core each), embed what is new in one CNN batch, match each
file against everything before it (its batch mates included), and write the batch, its pairs and the regrouping in
one SQLite transaction. A crash therefore loses at most the batch in hand, and a rerun picks it up again because
unchanged files are recognised by (path, size, mtime_ns).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import OrderedDict, deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from daemon.config import Config
from daemon.files import walk_images
from daemon.index import EmbeddingIndex, IndexParams, sync_index
from daemon.matcher import Match, Matcher, Probe
from daemon.store import DELETED, ERROR, EXACT, OK, RESOLVED, FileRecord, PairRecord, Store
from hashing.embedding import Embedder
from hashing.fingerprint import FileResult, Fingerprint, fingerprint_file
from hashing.geometry import structure

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class Duplicate:
    """A file just recorded that has confirmed pairs: what the watcher logs, journals and hands to hooks."""

    path: str
    group: int | None
    matches: list[dict]  # {"path", "kind", "cosine", "hamming", "inliers"}


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
    deferred: list[str] = field(default_factory=list)  # not recorded yet: still being written (see defer_errors)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode", "embedding", "index", "database", "total"), 0.0))  # fmt: skip

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


def _timed_fingerprint(path: str, max_side: int, max_pixels: int, max_bytes: int) -> tuple[FileResult, float]:
    t = time.perf_counter()
    r = fingerprint_file(path, max_side=max_side, max_pixels=max_pixels, max_bytes=max_bytes)
    return r, time.perf_counter() - t


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _InProcess(Executor):
    """workers = 0: fingerprint in this process (deterministic, for tests and tiny jobs)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # pragma: no cover - fingerprint_file does not raise for bad files
            f.set_exception(e)
        return f


class Pipeline:
    def __init__(self, cfg: Config, store: Store, embedder: Embedder) -> None:
        self.cfg = cfg
        self.store = store
        self.embedder = embedder
        params = IndexParams(
            dim=embedder.dim, model=embedder.name, m=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction, ef=cfg.hnsw_ef
        )
        dim = store.embedding_dim()
        if dim is not None and dim != embedder.dim:
            log.warning("database embeddings are %d-d, model gives %d-d: re-embedding everything", dim, embedder.dim)
        self.index: EmbeddingIndex = sync_index(store, cfg.index_path, params)
        self.matcher = Matcher(cfg, embedder, self.index, load_local=self._stored_local)
        self._local_cache: OrderedDict[int, tuple[np.ndarray, np.ndarray] | None] = OrderedDict()
        self.matcher.load_hashes(*store.live_hashes())
        self._pool: Executor | None = None
        self._dirty = False
        # The watcher's hooks: told about every new duplicate after its batch commits; asked whether an unreadable
        # file might only be incomplete (then it is handed back instead of recorded as an error).
        self.listener: Callable[[list[Duplicate]], None] | None = None
        self.on_move: Callable[[str, str], None] | None = None
        self.defer_errors: Callable[[FileResult], bool] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.cfg.workers <= 0:
                self._pool = _InProcess()
            else:  # forkserver: workers must not inherit torch's thread pools from this process
                ctx = multiprocessing.get_context("forkserver")
                self._pool = ProcessPoolExecutor(max_workers=self.cfg.workers, mp_context=ctx)
        return self._pool

    def save_index(self) -> None:
        if self._dirty:
            self.index.gen = self.store.gen
            self.index.save(self.cfg.index_path)
            self._dirty = False

    def close(self) -> None:
        self.save_index()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batch scan ----------------------------------------------------------------------------------------------

    def scan(self, roots: Sequence[Path], progress: Callable[[int, int], None] | None = None) -> ScanStats:
        """Bring the store in line with what is on disk under `roots`."""
        stats = ScanStats()
        t0 = time.perf_counter()
        roots = [Path(r).resolve() for r in roots]
        with self.store.atomic():
            self.store.add_roots(str(r) for r in roots)
        present = list(walk_images(roots, self.cfg.suffixes, exclude=[Path(q) for q in self.store.quarantines()]))
        stats.seen = len(present)
        known = self.store.stat_index([str(r) for r in roots])
        here = set(present)
        vanished = [fid for path, (fid, _, _, st) in known.items() if st not in (DELETED, RESOLVED) and path not in here]
        if vanished:
            self.forget(vanished)
            stats.deleted = len(vanished)
        todo = [p for p in present if self._changed(p, known.get(p))]
        stats.unchanged = len(present) - len(todo)
        done = 0
        if progress:
            progress(0, len(todo))
        for n in self.process(todo, stats):
            done += n
            if progress:
                progress(done, len(todo))
        self.save_index()
        stats.seconds["total"] = time.perf_counter() - t0
        return stats

    @staticmethod
    def _changed(path: str, known: tuple[int, int, int, str] | None) -> bool:
        if known is None or known[3] == DELETED:
            return True
        try:
            st = os.stat(path)
        except OSError:
            return True  # let the worker record why
        return (st.st_size, st.st_mtime_ns) != (known[1], known[2])

    # -- the per-file work, in batches ---------------------------------------------------------------------------

    def _fingerprint(self, path: str) -> FileResult:
        """One file in this process, with the configured limits (the workers get the same through _results)."""
        return fingerprint_file(path, self.cfg.decode_side, self.cfg.max_pixels, self.cfg.max_file_bytes)

    def _results(self, paths: Iterable[str]) -> Iterator[tuple[FileResult, float]]:
        """Fingerprints in input order, keeping the workers a few batches ahead of the CNN."""
        ex = self._executor()
        fn = partial(
            _timed_fingerprint,
            max_side=self.cfg.decode_side,
            max_pixels=self.cfg.max_pixels,
            max_bytes=self.cfg.max_file_bytes,
        )
        ahead = max(4, self.cfg.batch_size * 2)
        pending: deque[Future] = deque()
        for path in paths:
            pending.append(ex.submit(fn, path))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def process(self, paths: Iterable[str], stats: ScanStats) -> Iterator[int]:
        """Fingerprint, match and record `paths`; yields the number of files done after each batch."""
        batch: list[_Item] = []
        for result, seconds in self._results(paths):
            stats.add_time("decode", seconds)
            if result.fingerprint is None and self.defer_errors is not None and self.defer_errors(result):
                stats.deferred.append(result.path)
                continue
            batch.append(_Item(result))
            if len(batch) >= self.cfg.batch_size:
                self._commit(batch, stats)
                yield len(batch)
                batch = []
        if batch:
            self._commit(batch, stats)
            yield len(batch)

    def process_now(self, paths: Sequence[str]) -> ScanStats:
        """Process a few paths to completion (the watcher's entry point)."""
        stats = ScanStats()
        for _ in self.process(paths, stats):
            pass
        return stats

    def _commit(self, batch: list[_Item], stats: ScanStats) -> None:
        t = time.perf_counter()
        to_embed: list[_Item] = []
        claimed: set[int] = set()
        for item in batch:
            r = item.result
            item.record = self.store.by_path(r.path)
            fp = r.fingerprint
            if fp is None:
                continue
            if item.record is not None and item.record.status == OK and item.record.content_hash == fp.content_hash:
                continue  # same bytes, new mtime: nothing to recompute
            live = self.store.by_content(fp.content_hash, OK)
            # a rename: the same bytes under a path that is gone (its delete event may not have arrived yet)
            moved = [
                m
                for m in self.store.by_content(fp.content_hash, DELETED) + live
                if m.id not in claimed and m.embedding is not None and not os.path.exists(m.path)
            ]
            if moved and item.record is None:
                item.moved_from = moved[0]
                claimed.add(moved[0].id)  # type: ignore[arg-type]
                continue
            same = [s for s in live if s.path != r.path and s.embedding is not None and len(s.embedding) == self.embedder.dim]
            if same:
                item.reuse_from = same[0]
                item.embedding = same[0].embedding.astype(np.float32)
            else:
                to_embed.append(item)
        stats.add_time("database", time.perf_counter() - t)

        t = time.perf_counter()
        if to_embed:
            pixels = np.stack([i.result.fingerprint.pixels for i in to_embed])  # type: ignore[union-attr]
            vecs, local = self.embedder.embed_with_local(pixels)
            for item, v, loc in zip(to_embed, vecs, local):
                item.embedding = v.astype(np.float16).astype(np.float32)  # what the store will hold
                item.local = loc
        stats.add_time("embedding", time.perf_counter() - t)

        found: list[tuple[str, int, list[Match]]] = []
        with self.store.atomic():
            gen = self.store.next_gen()
            seeds: set[int] = set()
            for item in batch:
                seeds.update(self._record(item, gen, stats, found))
            t = time.perf_counter()
            self.store.regroup(seeds)
            stats.add_time("database", time.perf_counter() - t)
        self._dirty = True
        if found and self.listener is not None:
            self.listener(self._describe(found))
        if self.on_move is not None:
            for item in batch:
                if item.moved_from is not None:
                    self.on_move(item.moved_from.path, item.result.path)

    def _describe(self, found: list[tuple[str, int, list[Match]]]) -> list[Duplicate]:
        recs = self.store.many({m.other for _, _, ms in found for m in ms})
        out = []
        for path, fid, matches in found:
            out.append(Duplicate(path, self.store.group_of(fid), [
                {"path": recs[m.other].path, "kind": m.kind, "cosine": round(m.cosine, 4), "hamming": m.hamming,
                 "inliers": m.inliers}
                for m in matches if m.other in recs
            ]))  # fmt: skip
        return out

    def _record(self, item: _Item, gen: int, stats: ScanStats, found: list) -> set[int]:
        """Write one file and its pairs (inside the batch transaction); returns the ids whose groups may change."""
        r, old = item.result, item.record
        fp = r.fingerprint
        if fp is None:  # unreadable now: it leaves the indexes and its group, the reason is kept
            stats.errors += 1
            log.warning("%s: %s", r.path, r.error)
            rec = FileRecord(path=r.path, size=r.size, mtime_ns=r.mtime_ns, status=ERROR, error=r.error)
            if old is not None:
                rec.id = old.id
                self.matcher.remove(old.id)  # type: ignore[arg-type]
            t = time.perf_counter()
            fid = self.store.save_file(rec, gen)
            self.store.drop_pairs(fid)
            stats.add_time("database", time.perf_counter() - t)
            return {fid}

        if old is not None and old.status == OK and old.content_hash == fp.content_hash:
            self.store.touch(old.id, r.size, r.mtime_ns)  # type: ignore[arg-type]
            return set()

        if item.moved_from is not None:
            src = item.moved_from
            t = time.perf_counter()
            self.store.move(src.id, r.path, r.size, r.mtime_ns, gen)  # type: ignore[arg-type]
            stats.add_time("database", time.perf_counter() - t)
            t = time.perf_counter()
            self.matcher.add(src.id, self._probe(fp, src.embedding.astype(np.float32), None))  # type: ignore[arg-type, union-attr]
            stats.add_time("index", time.perf_counter() - t)
            stats.moved += 1
            log.info("moved: %s -> %s", src.path, r.path)
            return {src.id}  # type: ignore[return-value]

        stats.fingerprinted += 1 if item.reuse_from is None else 0
        stats.reused += 1 if item.reuse_from is not None else 0
        assert item.embedding is not None
        probe = self._probe(fp, item.embedding, item.local)
        rec = self._file_record(r, fp, item.embedding)
        t = time.perf_counter()
        if old is not None:
            rec.id = old.id
            self.matcher.remove(old.id)  # type: ignore[arg-type]
        fid = self.store.save_file(rec, gen)
        if old is not None:
            self.store.drop_pairs(fid)  # new content: old evidence is void
        stats.add_time("database", time.perf_counter() - t)

        t = time.perf_counter()
        # an identical copy only needs its exact pairs: the original carries the near ones
        matches: list[Match] = [] if item.reuse_from is not None else self.matcher.find(probe, exclude=fid)
        exact = {
            s.id for s in self.store.by_content(fp.content_hash, OK) if s.id != fid and not _same_file(s.path, r.path)
        }  # a hard link to the same inode takes no extra space: not a duplicate
        self.matcher.add(fid, probe)
        if item.local is not None:
            self._remember_local(fid, (item.local, probe.structure))  # type: ignore[arg-type]
        stats.add_time("index", time.perf_counter() - t)

        t = time.perf_counter()
        by_id = {m.other: m for m in matches}
        for other in exact:
            by_id[other] = Match(other, EXACT, 0, 1.0)
        for m in by_id.values():
            self.store.add_pair(PairRecord(fid, m.other, m.kind, m.hamming, m.cosine, m.view, m.inliers))
        stats.pairs += len(by_id)
        stats.add_time("database", time.perf_counter() - t)
        if by_id:
            log.info("%s: duplicate of %d file(s)", r.path, len(by_id))
            found.append((r.path, fid, list(by_id.values())))
        return {fid, *by_id}

    @staticmethod
    def _probe(fp: Fingerprint, embedding: np.ndarray, local: np.ndarray | None) -> Probe:
        return Probe(fp.ahash_views, fp.chash, embedding, local, fp.pixels, structure(fp.pixels))

    @staticmethod
    def _file_record(r: FileResult, fp: Fingerprint, embedding: np.ndarray) -> FileRecord:
        return FileRecord(
            path=r.path,
            size=r.size,
            mtime_ns=r.mtime_ns,
            status=OK,
            content_hash=fp.content_hash,
            width=fp.width,
            height=fp.height,
            format=fp.format,
            ahash=fp.ahash,
            chash=fp.chash,
            sharpness=fp.sharpness,
            taken_at=fp.taken_at,
            exif_fields=fp.exif_fields,
            embedding=embedding.astype(np.float16),
        )

    def _remember_local(self, file_id: int, detail: tuple[np.ndarray, np.ndarray] | None) -> None:
        self._local_cache[file_id] = detail
        self._local_cache.move_to_end(file_id)
        while len(self._local_cache) > self.cfg.local_cache:
            self._local_cache.popitem(last=False)

    def _stored_local(self, file_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A stored file's (local descriptors, structure) for geometric verification: from the cache of recent
        files (near duplicates usually arrive close together), else recomputed from disk. None when the file is
        gone or no longer holds the content that was fingerprinted."""
        if file_id in self._local_cache:
            self._local_cache.move_to_end(file_id)
            return self._local_cache[file_id]
        rec = self.store.get(file_id)
        detail = None
        if rec is not None and rec.status == OK:
            r = self._fingerprint(rec.path)
            if r.fingerprint is not None and r.fingerprint.content_hash == rec.content_hash:
                local = self.embedder.embed_with_local(r.fingerprint.pixels[None])[1][0]
                detail = (local, structure(r.fingerprint.pixels))
        self._remember_local(file_id, detail)
        return detail

    # -- removals ------------------------------------------------------------------------------------------------

    def moved(self, src: str, dest: str) -> bool:
        """A rename seen by the watcher: the record, fingerprints, pairs and index label follow the file.
        False when src is not a live record (the caller then treats dest as a new file)."""
        rec = self.store.by_path(src)
        if rec is None or rec.status != OK:
            return False
        try:
            st = os.stat(dest)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
            return False  # renamed and changed: fingerprint it again
        with self.store.atomic():
            self.store.move(rec.id, dest, st.st_size, st.st_mtime_ns, self.store.next_gen())  # type: ignore[arg-type]
        self._dirty = True
        log.info("moved: %s -> %s", src, dest)
        if self.on_move is not None:
            self.on_move(src, dest)
        return True

    def forget_paths(self, paths: Sequence[str]) -> int:
        """Files or whole folders gone from disk; returns how many records left the live set."""
        ids = []
        for p in paths:
            rec = self.store.by_path(p)
            if rec is not None and rec.status not in (DELETED, RESOLVED):
                ids.append(rec.id)
            else:
                ids += [fid for path, (fid, _, _, st) in self.store.stat_index([p]).items()
                        if st not in (DELETED, RESOLVED)]  # fmt: skip
        if ids:
            self.forget(ids)  # type: ignore[arg-type]
        return len(ids)

    def forget(self, file_ids: Sequence[int]) -> None:
        """Files gone from disk: out of the indexes and their groups; rows stay so a rename can find them."""
        with self.store.atomic():
            gen = self.store.next_gen()
            self.store.mark_deleted(file_ids, gen)
            for fid in file_ids:
                self.matcher.remove(fid)
            self.store.regroup(file_ids)
        self._dirty = True
        for fid in file_ids:
            log.info("gone: file #%d", fid)

    def probe_file(self, path: str) -> Probe:
        """Fingerprint and embed an image that need not be in the store (for `dupwatch query`)."""
        from hashing.errors import DecodeError

        r = self._fingerprint(path)
        if r.fingerprint is None:
            raise DecodeError(r.error or "unreadable")
        emb, local = self.embedder.embed_with_local(r.fingerprint.pixels[None])
        return self._probe(r.fingerprint, emb[0].astype(np.float16).astype(np.float32), local[0])
