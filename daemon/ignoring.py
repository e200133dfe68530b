""" "Not duplicates": the user's decisions about pairs and groups, and taking them back.

A decision is kept by content (both files' content hashes), so it survives renames, rescans and the daemon. Three
ways to take one, each saying what it changed:
- a pair (A, B): A and B are not duplicates of each other. They may still share a group through other files: the
  outcome says so, and names the group;
- a member: A is not a duplicate of any other file of its group, so A leaves it and the others stay together;
- a group: no two of its files are duplicates, so the group dissolves.
"""

from __future__ import annotations

from dataclasses import dataclass

from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.daemon.store import Store
from dupwatch.daemon.store.decisions import IgnoredPair


class IgnoreError(Exception):
    """A decision that cannot be taken as asked (unknown file, no such group, ...)."""


@dataclass
class IgnoreOutcome:
    pairs: int  # decisions recorded (already known ones count too)
    still_grouped: int | None = None  # for a pair: the group that still holds both, through other files


@dataclass
class IgnoredEntry:
    """A decision as `dupwatch ignored` lists it: the live files that hold each content now, if any."""

    id: int
    created_at: float
    paths_a: list[str]
    paths_b: list[str]


def _content(rec: FileRecord) -> str:
    if rec.content_hash is None:
        raise IgnoreError(f"{rec.path} has no fingerprint (unreadable?)")
    return rec.content_hash


def ignore_pair(store: Store, a: FileRecord, b: FileRecord) -> IgnoreOutcome:
    with store.atomic():
        store.decisions.ignore(_content(a), _content(b))
        store.graph.regroup([a.id, b.id])
    ga, gb = store.graph.group_of(a.id), store.graph.group_of(b.id)
    return IgnoreOutcome(1, ga if ga is not None and ga == gb else None)


def ignore_member(store: Store, rec: FileRecord) -> IgnoreOutcome:
    gid = store.graph.group_of(rec.id)
    if gid is None:
        raise IgnoreError(f"{rec.path} is in no group")
    others = [o for o in store.files.many(store.graph.group_members(gid)).values() if o.id != rec.id]
    with store.atomic():
        for o in others:
            store.decisions.ignore(_content(rec), _content(o))
        store.graph.regroup([rec.id, *(o.id for o in others)])
    return IgnoreOutcome(len(others))


def ignore_group(store: Store, group_id: int) -> IgnoreOutcome:
    members = list(store.files.many(store.graph.group_members(group_id)).values())
    if not members:
        raise IgnoreError(f"no group {group_id}")
    with store.atomic():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                store.decisions.ignore(_content(a), _content(b))
        store.graph.regroup([m.id for m in members])
    return IgnoreOutcome(len(members) * (len(members) - 1) // 2)


def _live_paths(store: Store, content: str) -> list[str]:
    return sorted(r.path for r in store.files.by_content(content, FileStatus.OK))


def list_ignored(store: Store) -> list[IgnoredEntry]:
    return [
        IgnoredEntry(p.id, p.created_at, _live_paths(store, p.a), _live_paths(store, p.b))
        for p in store.decisions.ignored_pairs()
    ]


def unignore_pair(store: Store, a: FileRecord, b: FileRecord) -> bool:
    """Take back the decision about A and B; their groups are recomputed (they may join again)."""
    with store.atomic():
        found = store.decisions.unignore(_content(a), _content(b))
        store.graph.regroup([a.id, b.id])
    return found


def unignore_id(store: Store, decision_id: int) -> IgnoredPair:
    with store.atomic():
        pair = store.decisions.unignore_id(decision_id)
        if pair is None:
            raise IgnoreError(f"no decision #{decision_id} ('dupwatch ignored' lists them)")
        ids = [r.id for h in (pair.a, pair.b) for r in store.files.by_content(h, FileStatus.OK)]
        store.graph.regroup(ids)
    return pair
