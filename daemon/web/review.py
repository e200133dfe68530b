"""The review pages' data: the report model (the same groups, keepers and evidence as `dupwatch report`) cut into
pages, largest reclaimable space first, and the action log (resolve actions and "not duplicates" decisions)."""

from __future__ import annotations

import math
import sqlite3
import threading
from dataclasses import asdict
from typing import Any

from dupwatch.daemon.ignoring import list_ignored
from dupwatch.daemon.keeper import KeeperPolicy
from dupwatch.daemon.reports import Report, build_report, summary
from dupwatch.daemon.store import Store

PAGE_SIZE = 50


def version(store: Store) -> tuple[object, ...] | None:
    """What the groups on the page depend on, read in one query: the generation (files, pairs, groups, resolve
    and undo), the "not duplicates" decisions and the chosen keepers. None where it cannot be read."""
    try:
        row = store.db.execute(
            "SELECT (SELECT value FROM meta WHERE key = 'gen'), "
            "(SELECT count(*) || ':' || ifnull(max(rowid), 0) FROM ignored), "
            "(SELECT count(*) || ':' || ifnull(max(created_at), 0) FROM keepers)"
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    return tuple(row)


class Reports:
    """The report of each kind of group for the database as it is now: built once per change (a library of
    thousands of groups takes a noticeable moment), then every page of it is a slice."""

    def __init__(self, policy: KeeperPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._kept: dict[bool, tuple[tuple[object, ...], Report]] = {}

    def get(self, store: Store, similar: bool) -> Report:
        key = version(store)
        with self._lock:
            kept = self._kept.get(similar)
            if key is not None and kept is not None and kept[0] == key:
                return kept[1]
        report = build_report(store, self.policy, similar)
        if key is not None:
            with self._lock:
                self._kept[similar] = (key, report)
        return report


def review_page(report: Report, gen: int, page: int, size: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of groups (duplicate groups, or similar-shot groups), each member marked keeper or protected,
    with the pairs' evidence; `gen` tells the page when the database moved on."""
    pages = max(1, math.ceil(len(report.groups) / size))
    page = min(max(page, 1), pages)
    groups = []
    for g in report.groups[(page - 1) * size : page * size]:
        d = asdict(g)
        for m in d["members"]:
            m["keeper"] = m["path"] == g.keeper
            m["protected"] = m["path"] in g.protected
        groups.append(d)
    return {
        "tier": report.tier,
        "noun": report.noun,
        "page": page,
        "pages": pages,
        "size": size,
        "gen": gen,
        "roots": report.roots,
        "summary": summary(report),
        "groups": groups,
    }


def action_log(store: Store, limit: int = 50) -> dict[str, Any]:
    """The latest resolve actions (with what undo would do) and "not duplicates" decisions, newest first."""
    actions = [
        {
            "id": a.id,
            "mode": str(a.mode),
            "target": a.target,
            "files": a.items,
            "done": a.done,
            "bytes": a.bytes,
            "undone": a.undone_at is not None,
        }
        for a in reversed(store.journal.actions())
    ][:limit]
    ignored = [asdict(e) for e in reversed(list_ignored(store))][:limit]
    return {"actions": actions, "ignored": ignored}
