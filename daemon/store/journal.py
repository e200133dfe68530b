"""The action journal: every `resolve` is an action whose items are written before any file moves, and whose
items' states follow each move, so that `undo` knows exactly what to put back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import sqlite_utils

from dupwatch.daemon.records import FileRecord
from dupwatch.daemon.store.paths import from_db, maybe_from_db, to_db


class ActionMode(StrEnum):
    MOVE = "move"  # into the quarantine
    TRASH = "trash"  # into the desktop trash
    HARDLINK = "hardlink"  # into the quarantine, a hard link to the keeper left in its place
    SYMLINK = "symlink"  # into the quarantine, a symlink to the keeper left in its place


class ItemState(StrEnum):
    """Where an item's file is, as far as the journal knows. Every state is committed before the disk is touched
    for the next step, so after a crash `moving` and `restoring` mean "look on disk" (actions._bring_back)."""

    PLANNED = "planned"  # at its place; nothing touched yet
    REFUSED = "refused"  # never attempted: the reason is in `error`; at its place
    MOVING = "moving"  # being moved away: at its place, in the quarantine, or half-way (both names)
    DONE = "done"  # in the quarantine or the trash (a link in its place for link modes)
    FAILED = "failed"  # the move failed and was rolled back: at its place
    RESTORING = "restoring"  # being put back by undo
    UNDONE = "undone"  # back at its place


@dataclass
class ActionItem:
    id: int
    action_id: int
    file_id: int
    keeper_id: int | None
    src: str
    dst: str | None
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    state: ItemState
    error: str | None = None


@dataclass
class Action:
    id: int
    created_at: float
    mode: ActionMode
    target: str | None
    undone_at: float | None = None
    items: list[ActionItem] = field(default_factory=list)


@dataclass
class ActionSummary:
    id: int
    mode: ActionMode
    target: str | None
    undone_at: float | None
    items: int
    done: int
    bytes: int


def _item(row: dict[str, Any]) -> ActionItem:
    values = {f.name: row[f.name] for f in fields(ActionItem)}
    texts = {"src": from_db(row["src"]), "dst": maybe_from_db(row["dst"]), "error": maybe_from_db(row["error"])}
    return ActionItem(**{**values, **texts, "state": ItemState(row["state"])})


class Journal:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def begin(self, mode: ActionMode, target: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO actions (created_at, mode, target) VALUES (?, ?, ?)",
            [time.time(), str(mode), None if target is None else to_db(target)],
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def plan_item(self, action_id: int, rec: FileRecord, keeper_id: int | None, dst: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO action_items (action_id, file_id, keeper_id, src, dst, size, mtime_ns, content_hash, state) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            [
                action_id,
                rec.id,
                keeper_id,
                to_db(rec.path),
                None if dst is None else to_db(dst),
                rec.size,
                rec.mtime_ns,
                rec.content_hash,
                str(ItemState.PLANNED),
            ],
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def set_item_state(self, item_id: int, state: ItemState, error: str | None = None, dst: str | None = None) -> None:
        self.db.execute(
            "UPDATE action_items SET state = ?, error = ?, dst = coalesce(?, dst) WHERE id = ?",
            [str(state), None if error is None else to_db(error), None if dst is None else to_db(dst), item_id],
        )

    def action(self, action_id: int | None = None) -> Action | None:
        """One action (the latest not undone when no id is given) with its items."""
        if action_id is None:
            rows = list(self.db.query("SELECT * FROM actions WHERE undone_at IS NULL ORDER BY id DESC LIMIT 1"))
        else:
            rows = list(self.db.query("SELECT * FROM actions WHERE id = ?", [action_id]))
        if not rows:
            return None
        r = rows[0]
        items = [
            _item(i) for i in self.db.query("SELECT * FROM action_items WHERE action_id = ? ORDER BY id", [r["id"]])
        ]
        target = maybe_from_db(r["target"])
        return Action(r["id"], r["created_at"], ActionMode(r["mode"]), target, r["undone_at"], items)

    def actions(self) -> list[ActionSummary]:
        return [
            ActionSummary(
                r["id"],
                ActionMode(r["mode"]),
                maybe_from_db(r["target"]),
                r["undone_at"],
                r["items"],
                r["done"] or 0,
                r["bytes"] or 0,
            )
            for r in self.db.query(
                "SELECT a.id, a.mode, a.target, a.undone_at, count(i.id) AS items, sum(i.state = ?) AS done, "
                "sum(i.size) AS bytes FROM actions a LEFT JOIN action_items i ON i.action_id = a.id "
                "GROUP BY a.id ORDER BY a.id",
                [str(ItemState.DONE)],
            )
        ]

    def mark_undone(self, action_id: int) -> None:
        self.db.execute("UPDATE actions SET undone_at = ? WHERE id = ?", [time.time(), action_id])

    def quarantines(self) -> list[str]:
        """Folders dupwatch moved files into: never scanned as photos."""
        rows = self.db.execute("SELECT DISTINCT target FROM actions WHERE target IS NOT NULL")
        return [from_db(r[0]) for r in rows]
