"""Opening the database: WAL, pragmas, the schema as sqlite-utils migrations, and the meta table (generation
counter, next group id).

A `gen` counter is bumped by each batch that changes embeddings; each file row remembers the `gen` of its last
change, which lets the index catch up after a crash instead of rebuilding from scratch.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from dupwatch.hashing.processes import process_alive

BUSY_TIMEOUT_S = 30.0


class StoreError(Exception):
    """The database cannot be used (locked past the timeout, newer schema, unreadable)."""


MIGRATIONS = Migrations("dupwatch")
_MIGRATION_NAMES: list[str] = []


def _migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    """Register a schema step; each runs once, in its own transaction, in the order they are defined."""
    _MIGRATION_NAMES.append(fn.__name__)
    return MIGRATIONS(name=fn.__name__)(fn)


@_migration
def m001_initial(db: sqlite_utils.Database) -> None:
    """The first schema. IF NOT EXISTS: databases made before migrations were recorded already hold it."""
    for sql in _SCHEMA_1:
        db.execute(sql)


@_migration
def m002_file_notes(db: sqlite_utils.Database) -> None:
    """What was odd about a file that was read all the same (an EXIF orientation that is not a number, ...)."""
    db.execute("ALTER TABLE files ADD COLUMN notes TEXT")


@_migration
def m003_last_group(db: sqlite_utils.Database) -> None:
    """The group a file is in or was last in: a group that dissolved (its files moved away by `resolve`) comes
    back under its old id when `undo` brings them back."""
    db.execute("ALTER TABLE files ADD COLUMN last_group INTEGER")


@_migration
def m004_tiers(db: sqlite_utils.Database) -> None:
    """Pairs come in tiers (exact / copy / similar, in the `kind` column) with the detail evidence that decided
    them; earlier near pairs become copies, verified again by the next scan. Files keep a hash of their decoded
    pixels (a PNG and a BMP of one bitmap are exact duplicates) and how well exposed they are (the best shot of a
    burst). Similar-shot groups (components over all tiers) live beside the duplicate groups of `members`."""
    for column in ("overlap", "changed", "scattered"):
        db.execute(f"ALTER TABLE pairs ADD COLUMN {column} REAL")
    legacy = db.execute("SELECT count(*) FROM pairs WHERE kind = 'near'").fetchone()[0]
    db.execute("UPDATE pairs SET kind = 'copy' WHERE kind = 'near'")
    if legacy:  # the next scan verifies their files again (pipeline.scan), then clears this
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rematch_legacy', '1')")
    db.execute("ALTER TABLE files ADD COLUMN pixel_hash TEXT")
    db.execute("ALTER TABLE files ADD COLUMN exposure REAL")
    db.execute("CREATE INDEX IF NOT EXISTS files_pixel_hash ON files(pixel_hash)")
    db.execute("CREATE TABLE shots (file_id INTEGER PRIMARY KEY REFERENCES files(id), group_id INTEGER NOT NULL)")
    db.execute("CREATE INDEX shots_group ON shots(group_id)")
    db.execute("ALTER TABLE files ADD COLUMN last_shot INTEGER")
    # every existing pair is a duplicate pair: the shot groups start as the duplicate groups, under the same ids
    db.execute("INSERT INTO shots (file_id, group_id) SELECT file_id, group_id FROM members")
    db.execute("UPDATE files SET last_shot = last_group")
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) SELECT 'next_shot_id', value FROM meta WHERE key = 'next_group_id'"
    )


@_migration
def m005_keepers(db: sqlite_utils.Database) -> None:
    """Keepers the user chose (in `dupwatch serve` or `dupwatch keep`), by content, so that the choice survives
    renames and rescans; it wins over the keeper rules in reports and `resolve`."""
    db.execute("CREATE TABLE keepers (content_hash TEXT PRIMARY KEY, created_at REAL NOT NULL)")


_SCHEMA_1 = [
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


def open_database(path: Path, readonly: bool = False, busy_timeout: float | None = None) -> sqlite_utils.Database:
    """The database at `path`, migrated to this dupwatch's schema (unless opened read-only). A write that finds
    the database locked waits `busy_timeout` seconds (default BUSY_TIMEOUT_S) before it fails."""
    if readonly and not path.exists():
        raise StoreError(f"no database at {path}: run 'dupwatch scan DIR' first")
    if path.exists() and path.stat().st_size == 0:  # SQLite would take it for a new database: it was truncated
        raise StoreError(f"{path} is empty (0 bytes), not a dupwatch database: truncated? remove it to start afresh")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not readonly and not path.exists():
        _create(path, busy_timeout or BUSY_TIMEOUT_S)
    try:
        db = sqlite_utils.Database(sqlite3.connect(str(path), timeout=busy_timeout or BUSY_TIMEOUT_S))
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {path}: {e}") from None
    try:
        if not readonly:
            db.enable_wal()
            _migrate(db, path)
        elif not db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'files'").fetchone()[0]:
            raise StoreError(f"{path} is not a dupwatch database (empty or damaged)")
        db.execute("PRAGMA foreign_keys=on")
        db.execute("PRAGMA synchronous=normal")
    except sqlite3.DatabaseError as e:
        db.close()
        raise StoreError(f"database {path} is unusable: {e}") from None
    except StoreError:
        db.close()
        raise
    return db


_UNFINISHED = ".new-"  # .NAME.new-PID: a database being made by process PID
_SIDECARS = ("", "-wal", "-shm", "-journal")


def _create(path: Path, timeout: float) -> None:
    """Make a new database under a temporary name beside `path` and link it into place whole: a process killed
    while making it leaves no 0-byte or half-made file at `path`, which the next start would have to refuse as
    damaged (a 0-byte database is what a truncation leaves). Another process that made it first wins."""
    _sweep_unfinished(path)
    tmp = path.with_name(f".{path.name}{_UNFINISHED}{os.getpid()}")
    _remove(tmp)
    try:
        conn = sqlite3.connect(str(tmp), timeout=timeout)
        try:
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            _migrate(db, tmp)
        finally:
            conn.close()  # the last connection: the WAL is checkpointed into the file and removed
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.rename(tmp, path)
    except sqlite3.Error as e:
        raise StoreError(f"cannot make database {path}: {e}{_space_left(path)}") from None
    except OSError as e:
        raise StoreError(f"cannot make database {path}: {e.strerror or e}{_space_left(path)}") from None
    finally:
        _remove(tmp)


def _space_left(path: Path) -> str:
    """A note for the error of a database that could not be made where the disk is (all but) full: SQLite says
    only 'disk I/O error' when its WAL index cannot be mapped there."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    return f" (the disk is full: {free:,} bytes free in {path.parent})" if free < (1 << 20) else ""


def _sweep_unfinished(path: Path) -> None:
    """Remove the databases that killed processes left half-made beside `path`: only names of exactly the form
    `_create` gives (.NAME.new-PID and its SQLite sidecars), never another file that happens to share the prefix."""
    prefix = f".{path.name}{_UNFINISHED}"
    for leftover in path.parent.glob(f"{glob.escape(prefix)}*"):
        rest = leftover.name[len(prefix) :]
        pid = next((rest[: -len(s)] for s in _SIDECARS[1:] if rest.endswith(s)), rest)
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    for suffix in _SIDECARS:
        path.with_name(path.name + suffix).unlink(missing_ok=True)


SQLITE_MAGIC = b"SQLite format 3\0"


class FileIdentity:
    """Notices the database file being deleted, replaced, truncated or overwritten under a long-running writer,
    which SQLite itself would not: it keeps writing to the open (and maybe deleted) file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        st = os.stat(path)
        self._id = (st.st_dev, st.st_ino)

    def problem(self) -> str | None:
        """None while the file is the one opened and still starts like an SQLite database."""
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except FileNotFoundError:
            return f"the database {self.path} was deleted while dupwatch was running"
        except OSError as e:
            return f"the database {self.path} cannot be read any more: {e.strerror}"
        if (st.st_dev, st.st_ino) != self._id:
            return f"the database {self.path} was replaced by another file while dupwatch was running"
        if head != SQLITE_MAGIC:
            return f"the database {self.path} was truncated or overwritten while dupwatch was running"
        return None


def _migrate(db: sqlite_utils.Database, path: Path) -> None:
    newer = [m.name for m in MIGRATIONS.applied(db) if m.name not in _MIGRATION_NAMES]
    if newer:
        raise StoreError(f"database {path} was written by a newer dupwatch (migrations {', '.join(newer)})")
    MIGRATIONS.apply(db)


class Meta:
    """Small named values: the generation counter, the next group id."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return default if row is None else str(row[0])

    def get_int(self, key: str, default: int = 0) -> int:
        return int(self.get(key) or default)

    def set(self, key: str, value: str | int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, str(value)])

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", [key])

    @property
    def gen(self) -> int:
        return self.get_int("gen")

    def next_gen(self) -> int:
        """Call inside the batch's transaction: the rows it touches are stamped with the new value."""
        g = self.gen + 1
        self.set("gen", g)
        return g
