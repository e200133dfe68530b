"""The files table: one row per path ever seen, with its fingerprints, embedding and status."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import sqlite_utils

from dupwatch.daemon.files import is_under
from dupwatch.daemon.records import FILE_FIELDS, FileRecord, FileRow, FileStatus
from dupwatch.daemon.store.paths import from_db, maybe_from_db, to_db
from dupwatch.hashing.perceptual import from_signed64, to_signed64

_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


def _id_lists(ids: Iterable[int]) -> Iterator[tuple[str, list[int]]]:
    """`ids` in chunks of _CHUNK, each with its placeholders for an `IN (...)` list."""
    wanted = list(ids)
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        yield ",".join("?" * len(chunk)), chunk


class KnownFile(NamedTuple):
    """What a scan needs to tell whether a path changed since it was recorded."""

    id: int
    size: int
    mtime_ns: int
    status: FileStatus


def record_from_row(row: dict[str, Any]) -> FileRecord:
    values = {name: row[name] for name in FILE_FIELDS}
    values["path"] = from_db(values["path"])
    values["error"] = maybe_from_db(values["error"])
    values["notes"] = maybe_from_db(values["notes"])
    values["status"] = FileStatus(row["status"])
    if values["ahash"] is not None:
        values["ahash"] = from_signed64(values["ahash"])
    if values["embedding"] is not None:
        values["embedding"] = np.frombuffer(values["embedding"], dtype=np.float16)
    return FileRecord(id=row["id"], gen=row["gen"] or 0, **values)


def _row_values(row: FileRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in FILE_FIELDS}
    values["path"] = to_db(row.path)
    values["error"] = None if row.error is None else to_db(row.error)
    values["status"] = str(row.status)
    if row.ahash is not None:
        values["ahash"] = to_signed64(row.ahash)
    if row.embedding is not None:
        values["embedding"] = row.embedding.astype(np.float16).tobytes()
    return values


class Files:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def _records(self, sql: str, params: Iterable[Any] = ()) -> list[FileRecord]:
        return [record_from_row(r) for r in self.db.query(sql, list(params))]

    def get(self, file_id: int) -> FileRecord | None:
        found = self._records("SELECT * FROM files WHERE id = ?", [file_id])
        return found[0] if found else None

    def by_path(self, path: str) -> FileRecord | None:
        found = self._records("SELECT * FROM files WHERE path = ?", [to_db(path)])
        return found[0] if found else None

    def by_content(self, content_hash: str, *statuses: FileStatus) -> list[FileRecord]:
        """Files holding these bytes, in any of `statuses` (live ones when none are given)."""
        wanted = [str(s) for s in statuses or (FileStatus.OK,)]
        marks = ",".join("?" * len(wanted))
        return self._records(
            f"SELECT * FROM files WHERE content_hash = ? AND status IN ({marks}) ORDER BY id", [content_hash, *wanted]
        )

    def by_pixels(self, pixel_hash: str) -> list[FileRecord]:
        """Live files whose decoded pixels are these (whatever their bytes)."""
        return self._records(
            "SELECT * FROM files WHERE pixel_hash = ? AND status = ? ORDER BY id", [pixel_hash, str(FileStatus.OK)]
        )

    def many(self, ids: Iterable[int]) -> dict[int, FileRecord]:
        out: dict[int, FileRecord] = {}
        for marks, chunk in _id_lists(ids):
            out.update((r.id, r) for r in self._records(f"SELECT * FROM files WHERE id IN ({marks})", chunk))
        return out

    def stat_index(self, roots: Iterable[str] | None = None) -> dict[str, KnownFile]:
        """path -> what is known of it, for every recorded file (under `roots` when given)."""
        roots = None if roots is None else list(roots)
        out = {}
        for fid, raw, size, mtime, status in self.db.execute(
            "SELECT id, path, size, mtime_ns, status FROM files"
        ).fetchall():
            path = from_db(raw)
            if roots is None or any(is_under(path, r) for r in roots):
                out[path] = KnownFile(fid, size, mtime, FileStatus(status))
        return out

    def save(self, row: FileRow, gen: int, file_id: int | None = None) -> int:
        """Insert, or update the row `file_id` (or the one with this path); returns the row id, which stays the
        same across updates so that index labels stay valid."""
        values = {**_row_values(row), "gen": gen, "updated_at": time.time()}
        if file_id is None:
            existing = self.db.execute("SELECT id FROM files WHERE path = ?", [to_db(row.path)]).fetchone()
            file_id = None if existing is None else int(existing[0])
        if file_id is not None:
            cols = ", ".join(f"{k} = :{k}" for k in values)
            self.db.execute(f"UPDATE files SET {cols} WHERE id = :id", {**values, "id": file_id})
            return file_id
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        cur = self.db.execute(f"INSERT INTO files ({cols}) VALUES ({marks})", values)
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def touch(self, file_id: int, size: int, mtime_ns: int) -> None:
        """Same content, new mtime (e.g. `touch`): remember the stat so the next scan skips it."""
        self.db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", [size, mtime_ns, file_id])

    def move(self, file_id: int, new_path: str, size: int, mtime_ns: int, gen: int) -> list[int]:
        """A rename: the row and its fingerprints travel with it. A stale row that still names the destination (a
        file deleted there earlier) is retired under a tombstone path, keeping whatever the action journal says
        about it; returns the retired ids, whose pairs are no longer evidence."""
        stale = [
            int(r[0])
            for r in self.db.execute("SELECT id FROM files WHERE path = ? AND id != ?", [to_db(new_path), file_id])
        ]
        for old in stale:
            self.db.execute(
                "UPDATE files SET path = ?, status = ?, gen = ? WHERE id = ?",
                [to_db(f"{new_path}\0superseded-by-{file_id}"), str(FileStatus.DELETED), gen, old],
            )
        self.db.execute(
            "UPDATE files SET path = ?, size = ?, mtime_ns = ?, status = ?, gen = ?, updated_at = ? WHERE id = ?",
            [to_db(new_path), size, mtime_ns, str(FileStatus.OK), gen, time.time(), file_id],
        )
        return stale

    def set_status(self, file_ids: Iterable[int], status: FileStatus, gen: int) -> None:
        now = time.time()
        for fid in file_ids:
            self.db.execute(
                "UPDATE files SET status = ?, gen = ?, updated_at = ? WHERE id = ?", [str(status), gen, now, fid]
            )

    # -- what the indexes are built from ----------------------------------------------------------------------

    def live_hashes(self, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, ahash, chash) of every fingerprinted live file (of those among `ids` when given), for the Hamming
        index."""
        sql = "SELECT id, ahash, chash FROM files WHERE status = ? AND ahash IS NOT NULL"
        if ids is None:
            rows = self.db.execute(sql, [str(FileStatus.OK)]).fetchall()
        else:
            rows = []
            for marks, chunk in _id_lists(ids):
                rows += self.db.execute(f"{sql} AND id IN ({marks})", [str(FileStatus.OK), *chunk]).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        arr = np.array(rows, dtype=np.int64)
        return arr[:, 0], arr[:, 1].view(np.uint64), arr[:, 2].view(np.uint64)

    def live_embeddings(self, since_gen: int = -1, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of live files changed after `since_gen`, in chunks (a million rows fit in RAM
        as an index, not twice over as Python objects)."""
        cur = self.db.execute(
            "SELECT id, embedding FROM files WHERE status = ? AND embedding IS NOT NULL AND gen > ? ORDER BY id",
            [str(FileStatus.OK), since_gen],
        )
        while rows := cur.fetchmany(batch):
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1)
            yield ids, vecs.astype(np.float32)

    def not_live_since(self, since_gen: int) -> list[int]:
        """Files that left the live set after `since_gen` (deleted, resolved, or now unreadable)."""
        rows = self.db.execute(
            "SELECT id FROM files WHERE status != ? AND gen > ?", [str(FileStatus.OK), since_gen]
        ).fetchall()
        return [int(r[0]) for r in rows]

    def live_count(self) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM files WHERE status = ? AND embedding IS NOT NULL", [str(FileStatus.OK)]
        ).fetchone()
        return int(row[0])

    def embedding_dim(self) -> int | None:
        row = self.db.execute("SELECT length(embedding) FROM files WHERE embedding IS NOT NULL LIMIT 1").fetchone()
        return None if row is None else int(row[0]) // 2
