"""The SQLite store: files, fingerprints, confirmed pairs, groups. It is the source of truth; the HNSW index and the
Hamming index are rebuilt from it.

Every write of one batch happens in one transaction (`atomic`), so a crash leaves either the whole batch or none
of it. A `gen` counter is bumped by each batch that changes embeddings; each file row remembers the `gen` of its
last change, which lets the index catch up after a crash instead of rebuilding from scratch.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import sqlite_utils

from daemon.files import is_under
from hashing.perceptual import from_signed64, to_signed64

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

OK, ERROR, DELETED = "ok", "error", "deleted"
RESOLVED = "resolved"  # moved to the quarantine, the trash, or replaced by a link by `dupwatch resolve`
EXACT, NEAR = "exact", "near"


class StoreError(Exception):
    """The database cannot be used (locked past the timeout, newer schema, unreadable)."""


@dataclass
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    status: str
    id: int | None = None
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    ahash: int | None = None  # unsigned 64-bit in Python, signed in SQLite
    chash: int | None = None
    sharpness: float | None = None
    taken_at: str | None = None
    exif_fields: int | None = None
    embedding: np.ndarray | None = None  # float16 unit vector
    error: str | None = None
    gen: int = 0

    @classmethod
    def from_row(cls, row: dict) -> "FileRecord":
        emb = row.get("embedding")
        return cls(
            id=row["id"],
            path=row["path"],
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            status=row["status"],
            content_hash=row["content_hash"],
            width=row["width"],
            height=row["height"],
            format=row["format"],
            ahash=None if row["ahash"] is None else from_signed64(row["ahash"]),
            chash=row["chash"],
            sharpness=row["sharpness"],
            taken_at=row["taken_at"],
            exif_fields=row["exif_fields"],
            embedding=None if emb is None else np.frombuffer(emb, dtype=np.float16),
            error=row["error"],
            gen=row["gen"] or 0,
        )


@dataclass
class PairRecord:
    a: int
    b: int
    kind: str  # exact | near
    hamming: int
    cosine: float
    view: int = 0  # dihedral view (hashing.views) under which the pair matched; 0 = as is
    inliers: int | None = None  # geometric verification's agreeing local matches (hashing.geometry)


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)""",
    """CREATE TABLE IF NOT EXISTS files (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER, mtime_ns INTEGER,
        content_hash TEXT,
        width INTEGER, height INTEGER, format TEXT,
        ahash INTEGER, chash INTEGER,
        sharpness REAL, taken_at TEXT, exif_fields INTEGER,
        embedding BLOB,
        status TEXT NOT NULL,
        error TEXT,
        gen INTEGER NOT NULL DEFAULT 0,
        updated_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS files_content_hash ON files(content_hash)",
    "CREATE INDEX IF NOT EXISTS files_status ON files(status)",
    "CREATE INDEX IF NOT EXISTS files_gen ON files(gen)",
    """CREATE TABLE IF NOT EXISTS pairs (
        a INTEGER NOT NULL REFERENCES files(id),
        b INTEGER NOT NULL REFERENCES files(id),
        kind TEXT NOT NULL, hamming INTEGER, cosine REAL, view INTEGER NOT NULL DEFAULT 0,
        inliers INTEGER, created_at REAL,
        PRIMARY KEY (a, b), CHECK (a < b)
    )""",
    "CREATE INDEX IF NOT EXISTS pairs_b ON pairs(b)",
    """CREATE TABLE IF NOT EXISTS members (
        file_id INTEGER PRIMARY KEY REFERENCES files(id),
        group_id INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS members_group ON members(group_id)",
    """CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, added_at REAL)""",
    """CREATE TABLE IF NOT EXISTS ignored (
        a TEXT NOT NULL, b TEXT NOT NULL, created_at REAL, PRIMARY KEY (a, b), CHECK (a < b)
    )""",
    """CREATE TABLE IF NOT EXISTS actions (
        id INTEGER PRIMARY KEY, created_at REAL NOT NULL, mode TEXT NOT NULL, target TEXT, undone_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS action_items (
        id INTEGER PRIMARY KEY,
        action_id INTEGER NOT NULL REFERENCES actions(id),
        file_id INTEGER NOT NULL REFERENCES files(id),
        keeper_id INTEGER REFERENCES files(id),
        src TEXT NOT NULL, dst TEXT,
        size INTEGER, mtime_ns INTEGER, content_hash TEXT,
        state TEXT NOT NULL,
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS action_items_action ON action_items(action_id)",
]

# Migrations from version N-1 to N, appended as the schema grows; each runs in one transaction.
_MIGRATIONS: dict[int, list[str]] = {}


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {path}: {e}") from None


class Store:
    """All SQL lives here; callers get records and plain values back."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise StoreError(f"no database at {self.path}: run 'dupwatch scan DIR' first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(_connect(self.path))
        try:
            if not readonly:
                with self.db.ensure_autocommit_on():
                    self.db.conn.execute("PRAGMA journal_mode=wal")
                self._migrate()
            self.db.conn.execute("PRAGMA foreign_keys=on")
            self.db.conn.execute("PRAGMA synchronous=normal")
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path} is unusable: {e}") from None

    def close(self) -> None:
        self.db.close()

    # -- schema -------------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.db.atomic():
            for sql in _SCHEMA[:1]:
                self.db.execute(sql)
            version = int(self.get_meta("schema_version", "0"))
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema {version}, newer than this dupwatch ({SCHEMA_VERSION})"
                )
            if version == 0:
                for sql in _SCHEMA[1:]:
                    self.db.execute(sql)
            else:
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for sql in _MIGRATIONS.get(v, []):
                        self.db.execute(sql)
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self.db.atomic():
            yield

    # -- generations ---------------------------------------------------------------------------------------------

    @property
    def gen(self) -> int:
        return int(self.get_meta("gen", "0") or 0)

    def next_gen(self) -> int:
        """Call inside the batch's transaction: the rows it touches are stamped with the new value."""
        g = self.gen + 1
        self.set_meta("gen", str(g))
        return g

    # -- files ---------------------------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Iterable = ()) -> list[dict]:
        cur = self.db.execute(sql, list(params))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def get(self, file_id: int) -> FileRecord | None:
        rows = self._rows("SELECT * FROM files WHERE id = ?", [file_id])
        return FileRecord.from_row(rows[0]) if rows else None

    def by_path(self, path: str) -> FileRecord | None:
        rows = self._rows("SELECT * FROM files WHERE path = ?", [path])
        return FileRecord.from_row(rows[0]) if rows else None

    def by_content(self, content_hash: str, status: str = OK) -> list[FileRecord]:
        rows = self._rows(
            "SELECT * FROM files WHERE content_hash = ? AND status = ? ORDER BY id", [content_hash, status]
        )
        return [FileRecord.from_row(r) for r in rows]

    def many(self, ids: Iterable[int]) -> dict[int, FileRecord]:
        ids = list(ids)
        out: dict[int, FileRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._rows(f"SELECT * FROM files WHERE id IN ({marks})", chunk):
                out[r["id"]] = FileRecord.from_row(r)
        return out

    def stat_index(self, roots: Iterable[str] | None = None) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, status) for every known file (under `roots` when given)."""
        out = {}
        for fid, path, size, mtime, status in self.db.execute(
            "SELECT id, path, size, mtime_ns, status FROM files"
        ).fetchall():
            if roots is None or any(is_under(path, r) for r in roots):
                out[path] = (fid, size, mtime, status)
        return out

    def save_file(self, rec: FileRecord, gen: int) -> int:
        """Insert or update by path; returns the row id (kept across updates so index labels stay valid)."""
        values = {
            "path": rec.path,
            "size": rec.size,
            "mtime_ns": rec.mtime_ns,
            "content_hash": rec.content_hash,
            "width": rec.width,
            "height": rec.height,
            "format": rec.format,
            "ahash": None if rec.ahash is None else to_signed64(rec.ahash),
            "chash": rec.chash,
            "sharpness": rec.sharpness,
            "taken_at": rec.taken_at,
            "exif_fields": rec.exif_fields,
            "embedding": None if rec.embedding is None else rec.embedding.astype(np.float16).tobytes(),
            "status": rec.status,
            "error": rec.error,
            "gen": gen,
            "updated_at": time.time(),
        }
        if rec.id is not None:
            cols = ", ".join(f"{k} = :{k}" for k in values)
            self.db.execute(f"UPDATE files SET {cols} WHERE id = :id", {**values, "id": rec.id})
            return rec.id
        existing = self.db.execute("SELECT id FROM files WHERE path = ?", [rec.path]).fetchone()
        if existing:
            rec.id = existing[0]
            return self.save_file(rec, gen)
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        cur = self.db.execute(f"INSERT INTO files ({cols}) VALUES ({marks})", values)
        rec.id = int(cur.lastrowid)
        return rec.id

    def touch(self, file_id: int, size: int, mtime_ns: int) -> None:
        """Same content, new mtime (e.g. `touch`): remember the stat so the next scan skips it."""
        self.db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", [size, mtime_ns, file_id])

    def move(self, file_id: int, new_path: str, size: int, mtime_ns: int, gen: int) -> None:
        """A rename: the row, its fingerprints, pairs and index label all travel with it. A stale row that still
        names the destination (a file deleted there earlier) is retired under a tombstone path, keeping whatever
        the action journal says about it."""
        for (stale,) in self.db.execute("SELECT id FROM files WHERE path = ? AND id != ?", [new_path, file_id]).fetchall():
            self.drop_pairs(stale)
            self.db.execute("DELETE FROM members WHERE file_id = ?", [stale])
            self.db.execute(
                "UPDATE files SET path = ?, status = ?, gen = ? WHERE id = ?",
                [f"{new_path}\0superseded-by-{file_id}", DELETED, gen, stale],
            )
        self.db.execute(
            "UPDATE files SET path = ?, size = ?, mtime_ns = ?, status = ?, gen = ?, updated_at = ? WHERE id = ?",
            [new_path, size, mtime_ns, OK, gen, time.time(), file_id],
        )

    def mark_deleted(self, file_ids: Iterable[int], gen: int) -> None:
        for fid in file_ids:
            self.db.execute(
                "UPDATE files SET status = ?, gen = ?, updated_at = ? WHERE id = ?", [DELETED, gen, time.time(), fid]
            )
            self.db.execute("DELETE FROM members WHERE file_id = ?", [fid])

    def live_hashes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, ahash, chash) of every fingerprinted live file, for the Hamming index."""
        rows = self.db.execute(
            "SELECT id, ahash, chash FROM files WHERE status = ? AND ahash IS NOT NULL", [OK]
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        arr = np.array(rows, dtype=np.int64)
        return arr[:, 0], arr[:, 1].view(np.uint64), arr[:, 2].view(np.uint64)

    def live_embeddings(self, since_gen: int = -1, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of live files changed after `since_gen`, in chunks (a million rows fit in RAM
        as an index, not twice over as Python objects)."""
        cur = self.db.execute(
            "SELECT id, embedding FROM files WHERE status = ? AND embedding IS NOT NULL AND gen > ? ORDER BY id",
            [OK, since_gen],
        )
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1)
            yield ids, vecs.astype(np.float32)

    def not_live_since(self, since_gen: int) -> list[int]:
        """Files that left the live set after `since_gen` (deleted, or now unreadable)."""
        rows = self.db.execute("SELECT id FROM files WHERE status != ? AND gen > ?", [OK, since_gen]).fetchall()
        return [r[0] for r in rows]

    def live_count(self) -> int:
        return self.db.execute(
            "SELECT count(*) FROM files WHERE status = ? AND embedding IS NOT NULL", [OK]
        ).fetchone()[0]

    def embedding_dim(self) -> int | None:
        row = self.db.execute("SELECT length(embedding) FROM files WHERE embedding IS NOT NULL LIMIT 1").fetchone()
        return None if row is None else row[0] // 2

    # -- pairs and groups ----------------------------------------------------------------------------------------

    def add_pair(self, p: PairRecord) -> None:
        a, b = sorted((p.a, p.b))
        self.db.execute(
            "INSERT OR REPLACE INTO pairs (a, b, kind, hamming, cosine, view, inliers, created_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            [a, b, p.kind, p.hamming, round(float(p.cosine), 5), p.view,
             p.inliers, time.time()],
        )

    def drop_pairs(self, file_id: int) -> None:
        """The file's content changed: what it matched before is no longer evidence."""
        self.db.execute("DELETE FROM pairs WHERE a = ? OR b = ?", [file_id, file_id])

    def neighbours(self, file_id: int, ignored: set[tuple[str, str]] | None = None) -> list[int]:
        """Live partners of a file, leaving out pairs the user marked as not duplicates."""
        ignored = self.ignored() if ignored is None else ignored
        rows = self.db.execute(
            """SELECT f.id, f.content_hash, me.content_hash FROM pairs p
               JOIN files f ON f.id = (CASE WHEN p.a = ? THEN p.b ELSE p.a END)
               JOIN files me ON me.id = ?
               WHERE (p.a = ? OR p.b = ?) AND f.status = ?""",
            [file_id, file_id, file_id, file_id, OK],
        ).fetchall()
        return [fid for fid, theirs, mine in rows if _key(theirs, mine) not in ignored]

    # -- decisions: ignored pairs, roots ---------------------------------------------------------------------------

    def ignored(self) -> set[tuple[str, str]]:
        return {(a, b) for a, b in self.db.execute("SELECT a, b FROM ignored")}

    def ignore(self, hash_a: str, hash_b: str) -> None:
        """Keyed by content, so the decision survives renames, rescans and the daemon."""
        if hash_a != hash_b:
            a, b = _key(hash_a, hash_b)
            self.db.execute("INSERT OR IGNORE INTO ignored (a, b, created_at) VALUES (?, ?, ?)", [a, b, time.time()])

    def add_roots(self, roots: Iterable[str]) -> None:
        for r in roots:
            self.db.execute("INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)", [r, time.time()])

    def roots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def quarantines(self) -> list[str]:
        """Folders dupwatch moved files into: never scanned as photos."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT target FROM actions WHERE target IS NOT NULL")]

    # -- the action journal --------------------------------------------------------------------------------------

    def begin_action(self, mode: str, target: str | None) -> int:
        cur = self.db.execute("INSERT INTO actions (created_at, mode, target) VALUES (?, ?, ?)", [time.time(), mode, target])
        return int(cur.lastrowid)

    def plan_item(self, action_id: int, rec: "FileRecord", keeper_id: int | None, dst: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO action_items (action_id, file_id, keeper_id, src, dst, size, mtime_ns, content_hash, state) "
            "VALUES (?,?,?,?,?,?,?,?, 'planned')",
            [action_id, rec.id, keeper_id, rec.path, dst, rec.size, rec.mtime_ns, rec.content_hash],
        )
        return int(cur.lastrowid)

    def set_item_state(self, item_id: int, state: str, error: str | None = None, dst: str | None = None) -> None:
        self.db.execute(
            "UPDATE action_items SET state = ?, error = ?, dst = coalesce(?, dst) WHERE id = ?",
            [state, error, dst, item_id],
        )

    def action(self, action_id: int | None = None) -> dict | None:
        """One action (the latest not undone when no id is given) with its items."""
        if action_id is None:
            row = self._rows("SELECT * FROM actions WHERE undone_at IS NULL ORDER BY id DESC LIMIT 1")
        else:
            row = self._rows("SELECT * FROM actions WHERE id = ?", [action_id])
        if not row:
            return None
        act = row[0]
        act["items"] = self._rows("SELECT * FROM action_items WHERE action_id = ? ORDER BY id", [act["id"]])
        return act

    def actions(self) -> list[dict]:
        return self._rows(
            "SELECT a.*, count(i.id) AS items, sum(i.state = 'done') AS done, sum(i.size) AS bytes FROM actions a "
            "LEFT JOIN action_items i ON i.action_id = a.id GROUP BY a.id ORDER BY a.id"
        )

    def mark_undone(self, action_id: int) -> None:
        self.db.execute("UPDATE actions SET undone_at = ? WHERE id = ?", [time.time(), action_id])

    def set_status(self, file_id: int, status: str, gen: int) -> None:
        self.db.execute(
            "UPDATE files SET status = ?, gen = ?, updated_at = ? WHERE id = ?", [status, gen, time.time(), file_id]
        )

    def group_of(self, file_id: int) -> int | None:
        row = self.db.execute("SELECT group_id FROM members WHERE file_id = ?", [file_id]).fetchone()
        return None if row is None else row[0]

    def group_members(self, group_id: int) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT file_id FROM members WHERE group_id = ?", [group_id])]

    def regroup(self, seeds: Iterable[int]) -> None:
        """Recompute the connected components that touch `seeds`, keeping group ids stable.

        Components are closed over live files only, so a deleted file splits its group where it was the bridge.
        A component keeps the smallest old group id among its members that no other component claimed first;
        new components get fresh ids that are never reused.
        """
        seeds = set(seeds)
        frontier = set(seeds)
        for fid in list(seeds):  # a seed that just left may have been the only link: take its partners' groups too
            partners = [r[0] for r in self.db.execute(
                "SELECT CASE WHEN a = ? THEN b ELSE a END FROM pairs WHERE a = ? OR b = ?", [fid, fid, fid])]  # fmt: skip
            for other in [fid, *partners]:
                frontier.add(other)
                gid = self.group_of(other)
                if gid is not None:
                    frontier.update(self.group_members(gid))
        seen: set[int] = set()
        components: list[list[int]] = []
        ignored = self.ignored()
        for start in sorted(frontier):
            if start in seen:
                continue
            rec = self.db.execute("SELECT status FROM files WHERE id = ?", [start]).fetchone()
            comp: list[int] = []
            stack = [start]
            seen.add(start)
            while stack and rec and rec[0] == OK:
                node = stack.pop()
                comp.append(node)
                for other in self.neighbours(node, ignored):
                    if other not in seen:
                        seen.add(other)
                        stack.append(other)
            components.append(sorted(comp) if comp else [start])
        old = {fid: self.group_of(fid) for comp in components for fid in comp}
        claimed: set[int] = set()
        next_id = int(self.get_meta("next_group_id", "1") or 1)
        for comp in sorted(components, key=lambda c: c[0]):
            for fid in comp:
                self.db.execute("DELETE FROM members WHERE file_id = ?", [fid])
            if len(comp) < 2:
                continue
            candidates = sorted({g for f in comp if (g := old.get(f)) is not None} - claimed)
            if candidates:
                gid = candidates[0]
            else:
                gid, next_id = next_id, next_id + 1
            claimed.add(gid)
            for fid in comp:
                self.db.execute("INSERT INTO members (file_id, group_id) VALUES (?, ?)", [fid, gid])
        self.set_meta("next_group_id", str(next_id))

    # -- read side for reports -----------------------------------------------------------------------------------

    def groups(self) -> list[tuple[int, list[FileRecord]]]:
        rows = self.db.execute("SELECT group_id, file_id FROM members ORDER BY group_id, file_id").fetchall()
        recs = self.many(fid for _, fid in rows)
        out: dict[int, list[FileRecord]] = {}
        for gid, fid in rows:
            out.setdefault(gid, []).append(recs[fid])
        return sorted(out.items())

    def pairs_within(self, file_ids: list[int]) -> list[PairRecord]:
        marks = ",".join("?" * len(file_ids))
        rows = self.db.execute(
            f"SELECT a, b, kind, hamming, cosine, view, inliers FROM pairs WHERE a IN ({marks}) AND b IN ({marks}) "
            "ORDER BY a, b",
            file_ids + file_ids,
        ).fetchall()
        return [PairRecord(*r) for r in rows]

    def errors(self) -> list[FileRecord]:
        rows = self._rows("SELECT * FROM files WHERE status = ? ORDER BY path", [ERROR])
        return [FileRecord.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        c = dict(self.db.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall())
        groups, grouped = self.db.execute("SELECT count(DISTINCT group_id), count(*) FROM members").fetchone()
        pairs = self.db.execute("SELECT count(*) FROM pairs").fetchone()[0]
        return {
            "files": c.get(OK, 0),
            "errors": c.get(ERROR, 0),
            "deleted": c.get(DELETED, 0),
            "resolved": c.get(RESOLVED, 0),
            "groups": groups,
            "grouped_files": grouped,
            "pairs": pairs,
        }


def _key(a: str | None, b: str | None) -> tuple[str, str]:
    return (a or "", b or "") if (a or "") < (b or "") else (b or "", a or "")
