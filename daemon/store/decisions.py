"""What the user told dupwatch: pairs that are not duplicates and the keepers chosen by hand (both kept by content,
so a decision survives renames, rescans and the daemon), and the folders it was asked to scan (actions never reach
outside them)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from dupwatch.daemon.store.paths import from_db, to_db


def content_key(a: str | None, b: str | None) -> tuple[str, str]:
    """The order-free key of a pair of contents."""
    x, y = a or "", b or ""
    return (x, y) if x < y else (y, x)


@dataclass
class IgnoredPair:
    """One "not duplicates" decision: two contents (content hashes), and when it was taken."""

    id: int
    a: str
    b: str
    created_at: float


class Decisions:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def ignored(self) -> set[tuple[str, str]]:
        return {(str(a), str(b)) for a, b in self.db.execute("SELECT a, b FROM ignored")}

    def ignore(self, hash_a: str, hash_b: str) -> None:
        if hash_a != hash_b:
            a, b = content_key(hash_a, hash_b)
            self.db.execute("INSERT OR IGNORE INTO ignored (a, b, created_at) VALUES (?, ?, ?)", [a, b, time.time()])

    def ignored_pairs(self) -> list[IgnoredPair]:
        return [
            IgnoredPair(int(r[0]), str(r[1]), str(r[2]), float(r[3] or 0))
            for r in self.db.execute("SELECT rowid, a, b, created_at FROM ignored ORDER BY rowid")
        ]

    def unignore(self, hash_a: str, hash_b: str) -> bool:
        a, b = content_key(hash_a, hash_b)
        return self.db.execute("DELETE FROM ignored WHERE a = ? AND b = ?", [a, b]).rowcount > 0

    def unignore_id(self, decision_id: int) -> IgnoredPair | None:
        found = [p for p in self.ignored_pairs() if p.id == decision_id]
        if found:
            self.db.execute("DELETE FROM ignored WHERE rowid = ?", [decision_id])
        return found[0] if found else None

    def keepers(self) -> dict[str, float]:
        """Contents chosen as keepers, with when: within a group the latest choice wins."""
        try:
            rows = self.db.execute("SELECT content_hash, created_at FROM keepers").fetchall()
        except sqlite3.OperationalError:  # a database opened read-only before its migration to keepers
            return {}
        return {str(h): float(t) for h, t in rows}

    def choose_keeper(self, content_hash: str, others: Iterable[str]) -> None:
        """`content_hash` is the keeper of its group: the choices of the group's other contents are dropped."""
        for h in others:
            self.db.execute("DELETE FROM keepers WHERE content_hash = ?", [h])
        self.db.execute(
            "INSERT OR REPLACE INTO keepers (content_hash, created_at) VALUES (?, ?)", [content_hash, time.time()]
        )

    def add_roots(self, roots: Iterable[str]) -> None:
        for r in roots:
            self.db.execute("INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)", [to_db(r), time.time()])

    def remove_roots_under(self, folder: str) -> list[str]:
        """Forget the roots at or below `folder`; returns them."""
        gone = [r for r in self.roots() if r == folder or r.startswith(folder.rstrip("/") + "/")]
        for r in gone:
            self.db.execute("DELETE FROM roots WHERE path = ?", [to_db(r)])
        return gone

    def roots(self) -> list[str]:
        return [from_db(r[0]) for r in self.db.execute("SELECT path FROM roots ORDER BY path")]
