"""Brute-force Hamming search over packed 64-bit hashes with numpy popcount.

A million hashes is 8 MB; one query is an XOR and a popcount over them (a few ms), which is simpler and more
exact than any tree. Items are added and removed in place so the watcher can keep it current.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_EMPTY = -1


@dataclass
class HammingIndex:
    """hashes[i] belongs to ids[i]; removed slots get id -1 and are reused."""

    _hashes: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=np.uint64))
    _ids: np.ndarray = field(default_factory=lambda: np.full(1024, _EMPTY, dtype=np.int64))
    _size: int = 0
    _slot: dict[int, int] = field(default_factory=dict)
    _free: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._slot)

    def add(self, item_id: int, value: int) -> None:
        if item_id in self._slot:
            self._hashes[self._slot[item_id]] = np.uint64(value)
            return
        if self._free:
            slot = self._free.pop()
        else:
            if self._size == len(self._hashes):
                grow = max(1024, len(self._hashes))
                self._hashes = np.concatenate([self._hashes, np.zeros(grow, dtype=np.uint64)])
                self._ids = np.concatenate([self._ids, np.full(grow, _EMPTY, dtype=np.int64)])
            slot = self._size
            self._size += 1
        self._hashes[slot] = np.uint64(value)
        self._ids[slot] = item_id
        self._slot[item_id] = slot

    def add_many(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Bulk load (start-up from the database): one concatenate instead of a Python loop of appends."""
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.uint64)
        if len(self) == 0 and self._size == 0:
            self._hashes = np.concatenate([values, np.zeros(1024, dtype=np.uint64)])
            self._ids = np.concatenate([ids, np.full(1024, _EMPTY, dtype=np.int64)])
            self._size = len(ids)
            self._slot = {int(i): n for n, i in enumerate(ids)}
            return
        for i, v in zip(ids.tolist(), values.tolist(), strict=True):
            self.add(i, v)

    def remove(self, item_id: int) -> None:
        slot = self._slot.pop(item_id, None)
        if slot is not None:
            self._ids[slot] = _EMPTY
            self._free.append(slot)

    def search(self, value: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids within `radius` bits of `value`, and their distances, nearest first."""
        dist = np.bitwise_count(self._hashes[: self._size] ^ np.uint64(value))
        hit = (dist <= radius) & (self._ids[: self._size] != _EMPTY)
        ids, d = self._ids[: self._size][hit], dist[hit].astype(np.int64)
        order = np.argsort(d, kind="stable")
        return ids[order], d[order]
