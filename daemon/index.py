"""The HNSW index over CNN embeddings (hnswlib, cosine), labels = file ids. Always rebuildable from the store.

hnswlib does not track which labels are live, raises when k exceeds the live count, must not be queried while
items are added, and can lose reachability on tiny indexes: this wrapper keeps the live set itself, clamps k,
serialises access, and answers small indexes by brute force. Saves go to a temporary file and are swapped in with
os.replace, followed by a metadata file naming the store generation the index reflects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import hnswlib
import numpy as np

log = logging.getLogger(__name__)

BRUTE_FORCE_BELOW = 256
_META_VERSION = 1


@dataclass
class IndexParams:
    dim: int
    model: str
    m: int = 16
    ef_construction: int = 200
    ef: int = 64


class EmbeddingSource(Protocol):
    """Where the index is rebuilt from (the store's files table)."""

    def live_embeddings(self, since_gen: int = -1) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def not_live_since(self, since_gen: int) -> list[int]: ...

    def live_count(self) -> int: ...


class IndexError_(Exception):
    """The saved index cannot be used; the caller rebuilds it from the store."""


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class EmbeddingIndex:
    def __init__(self, params: IndexParams, capacity: int = 1024, _init: bool = True) -> None:
        self.params = params
        self.gen = 0
        self.live: set[int] = set()
        self._lock = threading.RLock()
        self._index = hnswlib.Index(space="cosine", dim=params.dim)
        if _init:
            self._index.init_index(max_elements=max(capacity, 1024), M=params.m, ef_construction=params.ef_construction)
            self._index.set_ef(params.ef)
        self._labels: set[int] = set()  # every label ever added, live or marked deleted
        self._few: dict[int, np.ndarray] | None = {}  # vectors mirrored while the index is small (brute force)

    def __len__(self) -> int:
        return len(self.live)

    def _reserve(self, extra: int) -> None:
        need = self._index.element_count + extra
        cap = self._index.get_max_elements()
        if need > cap:  # grow ahead of need: resize_index is costly and must not race with queries
            self._index.resize_index(max(need, cap * 2))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.params.dim)
        with self._lock:
            for label in ids.tolist():
                if label in self._labels and label not in self.live:
                    self._index.unmark_deleted(label)
            self._reserve(len(ids))
            self._index.add_items(vectors, ids)
            self._labels.update(ids.tolist())
            self.live.update(ids.tolist())
            if self._few is not None:
                if len(self._labels) > BRUTE_FORCE_BELOW:
                    self._few = None
                else:
                    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                    self._few.update(zip(ids.tolist(), vectors / norms, strict=True))

    def remove(self, file_id: int) -> None:
        with self._lock:
            if file_id in self.live:
                self._index.mark_deleted(file_id)
                self.live.discard(file_id)

    def query(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to k nearest live files: (ids, cosine similarities), most similar first."""
        vector = np.asarray(vector, dtype=np.float32).reshape(1, self.params.dim)
        with self._lock:
            n = len(self.live)
            k = min(k, n)
            if k <= 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            if n <= BRUTE_FORCE_BELOW:
                return self._brute_force(vector, k)
            self._index.set_ef(max(self.params.ef, k))
            try:
                labels, dist = self._index.knn_query(vector, k=k)
            except RuntimeError:  # too few reachable live items for k: exact search instead
                return self._brute_force(vector, k)
        return labels[0].astype(np.int64), (1.0 - dist[0]).astype(np.float32)

    def vectors(self, ids: list[int]) -> np.ndarray:
        """Stored (unit) vectors of live ids, for scoring candidates that the hashes found."""
        with self._lock:
            return np.asarray(self._index.get_items(ids), dtype=np.float32).reshape(len(ids), self.params.dim)

    def _brute_force(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter(self.live, dtype=np.int64, count=len(self.live))
        if self._few is not None:
            vecs = np.stack([self._few[i] for i in ids.tolist()])
        else:
            vecs = np.asarray(self._index.get_items(ids.tolist()), dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        q = vector[0] / max(float(np.linalg.norm(vector[0])), 1e-12)
        sims = vecs @ q
        order = np.argsort(-sims, kind="stable")[:k]
        return ids[order], sims[order].astype(np.float32)

    # -- persistence ---------------------------------------------------------------------------------------------

    @staticmethod
    def meta_path(path: Path) -> Path:
        return path.with_name(path.name + ".meta.npz")

    def save(self, path: Path) -> None:
        """Atomic: the index first, then the metadata that vouches for it (see module docstring)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with self._lock:
            self._index.save_index(str(tmp))
            live = np.fromiter(self.live, dtype=np.int64, count=len(self.live))
            labels = np.fromiter(self._labels, dtype=np.int64, count=len(self._labels))
            gen = self.gen
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        meta = {
            "version": _META_VERSION,
            "gen": gen,
            "dim": self.params.dim,
            "model": self.params.model,
            "m": self.params.m,
            "size": tmp.stat().st_size,
            "digest": _file_digest(tmp),
        }
        os.replace(tmp, path)
        mtmp = path.with_name(path.name + ".meta.tmp.npz")
        np.savez(mtmp, live=live, labels=labels, meta=np.array(json.dumps(meta)))
        with open(mtmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(mtmp, self.meta_path(path))

    @classmethod
    def load(cls, path: Path, params: IndexParams) -> EmbeddingIndex:
        """Raises IndexError_ for anything not trustworthy: missing, other model, torn or corrupt file."""
        mpath = cls.meta_path(path)
        if not path.exists() or not mpath.exists():
            raise IndexError_("no saved index")
        try:
            with np.load(mpath) as z:
                meta = json.loads(str(z["meta"]))
                live, labels = z["live"], z["labels"]
        except Exception as e:
            raise IndexError_(f"index metadata unreadable: {e}") from None
        if meta.get("version") != _META_VERSION or meta.get("dim") != params.dim or meta.get("model") != params.model:
            raise IndexError_("index was built for another model or format")
        if path.stat().st_size != meta.get("size") or _file_digest(path) != meta.get("digest"):
            raise IndexError_("index file does not match its checksum (torn or corrupt)")
        self = cls(params, _init=False)
        try:
            self._index.load_index(str(path))
        except Exception as e:
            raise IndexError_(f"hnswlib could not load the index: {e}") from None
        self._index.set_ef(params.ef)  # ef is not saved by hnswlib
        self.live = set(live.tolist())
        self._labels = set(labels.tolist())
        self.gen = int(meta["gen"])
        self._few = None  # brute force on a loaded index reads vectors from hnswlib
        return self


def sync_index(source: EmbeddingSource, store_gen: int, path: Path, params: IndexParams) -> EmbeddingIndex:
    """Load the saved index and bring it up to the store's generation, or rebuild it from the store.

    After a crash the saved index is older than the store: rows changed since its generation are re-added and
    rows that left the live set are marked deleted. Anything inconsistent (count mismatch, bad checksum, another
    model) means a full rebuild, which is always correct because the store holds every embedding.
    """
    try:
        index = EmbeddingIndex.load(path, params)
        if index.gen > store_gen:
            raise IndexError_("index is newer than the database (restored from a backup?)")
        if index.gen < store_gen:
            log.info("index is at generation %d, database at %d: catching up", index.gen, store_gen)
            catch_up(index, source, index.gen)
        if len(index) != source.live_count():
            raise IndexError_(f"index holds {len(index)} live items, database {source.live_count()}")
        index.gen = store_gen
        return index
    except IndexError_ as e:
        if path.exists() or EmbeddingIndex.meta_path(path).exists():
            log.warning("rebuilding the embedding index from the database: %s", e)
        return rebuild_index(source, store_gen, params)


def catch_up(index: EmbeddingIndex, source: EmbeddingSource, since_gen: int) -> tuple[list[int], list[int]]:
    """Bring `index` from `since_gen` to the source's present: rows that left the live set are removed, rows added
    or changed since are (re-)added. Returns (removed ids, added ids)."""
    gone = source.not_live_since(since_gen)
    for fid in gone:
        index.remove(fid)
    added: list[int] = []
    for ids, vecs in source.live_embeddings(since_gen=since_gen):
        index.add(ids, vecs)
        added += ids.tolist()
    return gone, added


def rebuild_index(source: EmbeddingSource, store_gen: int, params: IndexParams) -> EmbeddingIndex:
    index = EmbeddingIndex(params, capacity=source.live_count() + 1024)
    for ids, vecs in source.live_embeddings():
        index.add(ids, vecs)
    index.gen = store_gen
    return index
