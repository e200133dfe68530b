"""The SQLite store: the source of truth. The HNSW index and the Hamming index are rebuilt from it.

One connection, shared by parts with one job each: `files` (rows, fingerprints, embeddings), `graph` (pairs and
groups), `decisions` (not-duplicates, roots), `journal` (resolve actions), `read` (what reports show). Every write
of one batch happens in one transaction (`atomic`), so a crash leaves either the whole batch or none of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dupwatch.daemon.store.database import FileIdentity, Meta, StoreError, open_database
from dupwatch.daemon.store.decisions import Decisions
from dupwatch.daemon.store.files import Files, KnownFile
from dupwatch.daemon.store.graph import Graph
from dupwatch.daemon.store.journal import Action, ActionItem, ActionMode, ActionSummary, ItemState, Journal
from dupwatch.daemon.store.readmodel import ReadModel

__all__ = [
    "Action",
    "ActionItem",
    "ActionMode",
    "ActionSummary",
    "FileIdentity",
    "ItemState",
    "KnownFile",
    "Store",
    "StoreError",
]


class Store:
    def __init__(self, path: Path, readonly: bool = False, busy_timeout: float | None = None) -> None:
        self.path = Path(path)
        self.db = open_database(self.path, readonly, busy_timeout)
        self.meta = Meta(self.db)
        self.files = Files(self.db)
        self.decisions = Decisions(self.db)
        self.graph = Graph(self.db, self.meta, self.decisions)
        self.journal = Journal(self.db)
        self.read = ReadModel(self.db, self.files)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction (nested calls become savepoints). It takes the write lock at its start (BEGIN
        IMMEDIATE, waiting out another writer for the busy timeout): a deferred transaction that read first could
        not upgrade after another connection's commit and would fail at once with "database is locked" (the web
        app's changes inside `watch --serve` are such another connection)."""
        conn = self.db.conn
        if conn.in_transaction:
            with self.db.atomic():
                yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @property
    def gen(self) -> int:
        return self.meta.gen

    def next_gen(self) -> int:
        return self.meta.next_gen()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
