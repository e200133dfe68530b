"""The review pages' data: the report model (the same groups, keepers and evidence as `dupwatch report`) cut into
pages, largest reclaimable space first, and the action log (resolve actions and "not duplicates" decisions)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from dupwatch.daemon.ignoring import list_ignored
from dupwatch.daemon.keeper import KeeperPolicy
from dupwatch.daemon.reports import build_report, summary
from dupwatch.daemon.store import Store

PAGE_SIZE = 50


def review_page(store: Store, policy: KeeperPolicy, similar: bool, page: int, size: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of groups (duplicate groups, or similar-shot groups with `similar`), each member marked keeper or
    protected, with the pairs' evidence; `gen` tells the page when the database moved on."""
    report = build_report(store, policy.best_shot() if similar else policy, similar)
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
        "gen": store.gen,
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
