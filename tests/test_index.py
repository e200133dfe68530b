"""The HNSW wrapper: k clamped, deletions, atomic saves, and rebuild/catch-up from the store when out of step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dupwatch.daemon.index import BRUTE_FORCE_BELOW, EmbeddingIndex, IndexError_, IndexParams, sync_index
from dupwatch.daemon.records import FileRow, FileStatus
from dupwatch.daemon.store import Store

DIM = 16
PARAMS = IndexParams(dim=DIM, model="test")


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_k_larger_than_the_live_count_is_clamped() -> None:
    idx = EmbeddingIndex(PARAMS)
    v = _vecs(3)
    idx.add(np.array([10, 11, 12]), v)
    idx.remove(11)
    ids, sims = idx.query(v[0], k=50)
    assert ids.tolist()[0] == 10 and 11 not in ids.tolist() and len(ids) == 2
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    idx.remove(11)  # removing twice is harmless (hnswlib itself raises)
    idx.add(np.array([11]), v[1:2])  # and a deleted label can come back
    assert 11 in idx.query(v[1], k=3)[0].tolist()


def test_large_index_uses_hnsw_and_finds_exact_neighbours() -> None:
    n = BRUTE_FORCE_BELOW * 4
    idx = EmbeddingIndex(PARAMS, capacity=16)  # grows ahead of need
    v = _vecs(n, 1)
    idx.add(np.arange(n), v)
    hits = sum(idx.query(v[i], k=1)[0][0] == i for i in range(0, n, 7))
    assert hits >= 0.95 * len(range(0, n, 7))
    for i in range(0, n, 2):
        idx.remove(i)
    ids, _ = idx.query(v[0], k=n)  # more than live: clamped, no hnswlib error
    assert len(ids) == n // 2 and all(i % 2 for i in ids.tolist())


def test_save_is_atomic_and_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.hnsw"
    idx = EmbeddingIndex(PARAMS)
    idx.add(np.arange(5), _vecs(5))
    idx.gen = 7
    idx.save(path)
    assert not list(tmp_path.glob("*.tmp*"))
    back = EmbeddingIndex.load(path, PARAMS)
    assert back.gen == 7 and back.live == set(range(5))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexError_, match="checksum"):
        EmbeddingIndex.load(path, PARAMS)
    with pytest.raises(IndexError_, match="another model"):
        EmbeddingIndex.load(path, IndexParams(dim=DIM, model="other"))


def _add_files(store: Store, n: int, start: int = 0) -> list[int]:
    ids = []
    with store.atomic():
        gen = store.next_gen()
        for i, v in enumerate(_vecs(n, start)):
            rec = FileRow(
                path=f"/p/{start + i}.jpg", size=1, mtime_ns=1, status=FileStatus.OK, embedding=v.astype(np.float16)
            )
            ids.append(store.files.save(rec, gen))
    return ids


def test_index_catches_up_after_a_crash_and_rebuilds_when_needed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    path = tmp_path / "s.db.hnsw"
    ids = _add_files(store, 10)
    idx = sync_index(store.files, store.gen, path, PARAMS)  # nothing saved yet: built from the store
    assert idx.live == set(ids)
    idx.save(path)
    more = _add_files(store, 5, start=100)  # the store moves on, the saved index does not (a crash)
    with store.atomic():
        store.files.set_status(ids[:2], FileStatus.DELETED, store.next_gen())
    caught_up = sync_index(store.files, store.gen, path, PARAMS)
    assert caught_up.live == set(ids[2:]) | set(more)
    assert caught_up.gen == store.gen
    path.write_bytes(b"garbage")
    rebuilt = sync_index(store.files, store.gen, path, PARAMS)
    assert rebuilt.live == set(ids[2:]) | set(more)
