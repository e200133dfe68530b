"""Confirmed pairs and the groups they form: groups are the connected components of the pairs between live files,
leaving out pairs the user marked as not duplicates. Group ids are stable: a group keeps its id as files join or
leave, and ids are never reused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import sqlite_utils

from dupwatch.daemon.records import FileStatus, PairRecord
from dupwatch.daemon.store.database import Meta
from dupwatch.daemon.store.decisions import Decisions, content_key

_OK = str(FileStatus.OK)

# Every live file reachable from the starting set over pairs between live files (the starting files themselves
# are included whatever their status: a file that just left still names the neighbours it bridged).
_REACH = """
WITH RECURSIVE reach(id) AS (
    SELECT value FROM json_each(:start)
    UNION
    SELECT p.b FROM pairs p JOIN reach r ON p.a = r.id JOIN files f ON f.id = p.b AND f.status = :ok
    UNION
    SELECT p.a FROM pairs p JOIN reach r ON p.b = r.id JOIN files f ON f.id = p.a AND f.status = :ok
)
SELECT id FROM reach
"""


class Graph:
    def __init__(self, db: sqlite_utils.Database, meta: Meta, decisions: Decisions) -> None:
        self.db = db
        self.meta = meta
        self.decisions = decisions

    def add_pair(self, p: PairRecord) -> None:
        a, b = sorted((p.a, p.b))
        self.db.execute(
            "INSERT OR REPLACE INTO pairs (a, b, kind, hamming, cosine, view, inliers, created_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            [a, b, str(p.kind), p.hamming, round(float(p.cosine), 5), p.view, p.inliers, time.time()],
        )

    def drop_pairs(self, file_ids: Iterable[int]) -> None:
        """The files' content changed: what they matched before is no longer evidence."""
        for fid in file_ids:
            self.db.execute("DELETE FROM pairs WHERE a = ? OR b = ?", [fid, fid])

    def group_of(self, file_id: int) -> int | None:
        row = self.db.execute("SELECT group_id FROM members WHERE file_id = ?", [file_id]).fetchone()
        return None if row is None else int(row[0])

    def group_members(self, group_id: int) -> list[int]:
        return [int(r[0]) for r in self.db.execute("SELECT file_id FROM members WHERE group_id = ?", [group_id])]

    def regroup(self, seeds: Iterable[int]) -> None:
        """Recompute the groups that `seeds` belong or belonged to, keeping group ids stable.

        The affected sub-graph is loaded in a few queries whatever its size: the seeds, their partners and the
        members of their groups; every live file reachable from those (one recursive query); then the pairs among
        them. Components are closed over live files only, so a file that left splits its group where it was the
        bridge. A component keeps the smallest old group id among its members that no other component claimed
        first; new components get fresh ids that are never reused.
        """
        seeds = sorted(set(seeds))
        if not seeds:
            return
        start = self._neighbourhood(seeds)
        nodes = [int(r[0]) for r in self.db.execute(_REACH, {"start": json.dumps(start), "ok": _OK})]
        ids = json.dumps(nodes)
        info = self.db.execute(
            "SELECT f.id, f.status, f.content_hash, m.group_id, f.last_group FROM json_each(?) j "
            "JOIN files f ON f.id = j.value LEFT JOIN members m ON m.file_id = f.id",
            [ids],
        ).fetchall()
        live = {int(fid): chash for fid, status, chash, _, _ in info if status == _OK}
        old = {int(fid): gid for fid, _, _, gid, _ in info if gid is not None}
        last = {int(fid): lg for fid, _, _, _, lg in info if lg is not None}
        ignored = self.decisions.ignored()
        parent = {n: n for n in nodes}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b in self.db.execute(
            "SELECT a, b FROM pairs WHERE a IN (SELECT value FROM json_each(:ids)) "
            "AND b IN (SELECT value FROM json_each(:ids))",
            {"ids": ids},
        ):
            if a in live and b in live and content_key(live[a], live[b]) not in ignored:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        components: dict[int, list[int]] = {}
        for n in nodes:
            components.setdefault(find(n), []).append(n)

        self.db.execute("DELETE FROM members WHERE file_id IN (SELECT value FROM json_each(?))", [ids])
        claimed: set[int] = set()
        next_id = self.meta.get_int("next_group_id", 1)
        rows: list[tuple[int, int]] = []
        for comp in sorted((sorted(c) for c in components.values()), key=lambda c: c[0]):
            if len(comp) < 2:
                continue
            # the smallest id a member holds now; else, when every member was last in one group that no group
            # holds any more, that group's id (a group that dissolved when `resolve` moved its files away comes back
            # under its id at `undo`); else a new id
            candidates = sorted({g for f in comp if (g := old.get(f)) is not None} - claimed)
            previous = {last.get(f) for f in comp}
            if not candidates and len(previous) == 1 and None not in previous:
                candidates = [g for g in sorted({g for g in previous if g is not None} - claimed) if not self._held(g)]
            if candidates:
                gid = candidates[0]
            else:
                gid, next_id = next_id, next_id + 1
            claimed.add(gid)
            rows += [(fid, gid) for fid in comp]
        self.db.execute(
            "INSERT INTO members (file_id, group_id) "
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)",
            [json.dumps(rows)],
        )
        # every file remembers the group it is in, or was last in
        remembered = dict(old) | dict(rows)
        self.db.execute(
            "UPDATE files SET last_group = json_extract(j.value, '$[1]') FROM json_each(?) j "
            "WHERE files.id = json_extract(j.value, '$[0]')",
            [json.dumps(sorted(remembered.items()))],
        )
        self.meta.set("next_group_id", next_id)

    def _held(self, group_id: int) -> bool:
        """Does some group (outside the files being regrouped, whose rows were just cleared) hold this id?"""
        return self.db.execute("SELECT 1 FROM members WHERE group_id = ? LIMIT 1", [group_id]).fetchone() is not None

    def _neighbourhood(self, seeds: list[int]) -> list[int]:
        """The seeds, their partners (whatever their status) and every member of the groups of all of those."""
        ids = json.dumps(seeds)
        near = {
            int(r[0])
            for r in self.db.execute(
                "SELECT b FROM pairs WHERE a IN (SELECT value FROM json_each(:ids)) "
                "UNION SELECT a FROM pairs WHERE b IN (SELECT value FROM json_each(:ids))",
                {"ids": ids},
            )
        } | set(seeds)
        grouped = {
            int(r[0])
            for r in self.db.execute(
                "SELECT file_id FROM members WHERE group_id IN "
                "(SELECT group_id FROM members WHERE file_id IN (SELECT value FROM json_each(?)))",
                [json.dumps(sorted(near))],
            )
        }
        return sorted(near | grouped)
