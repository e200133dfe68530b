"""Confirmed pairs and the groups they form, at two levels: duplicate groups (table `members`) are the connected
components of exact and copy pairs between live files; similar-shot groups (table `shots`) are the components over
pairs of every tier, each holding whole duplicate groups. Pairs the user marked as not duplicates are left out of
both. Group ids are stable: a group keeps its id as files join or leave, and ids are never reused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from dupwatch.daemon.records import DUPLICATE_TIERS, FileStatus, PairRecord, Tier
from dupwatch.daemon.store.database import Meta
from dupwatch.daemon.store.decisions import Decisions, content_key
from dupwatch.daemon.store.paths import from_db

_OK = str(FileStatus.OK)

# Every live file reachable from the starting set over pairs between live files (the starting files themselves
# are included whatever their status: a file that just left still names the neighbours it bridged).
_REACH = """
WITH RECURSIVE reach(id) AS (
    SELECT value FROM json_each(:start)
    UNION
    SELECT p.b FROM pairs p JOIN reach r ON p.a = r.id JOIN files f ON f.id = p.b AND f.status = :ok
        WHERE p.kind IN (SELECT value FROM json_each(:tiers))
    UNION
    SELECT p.a FROM pairs p JOIN reach r ON p.b = r.id JOIN files f ON f.id = p.a AND f.status = :ok
        WHERE p.kind IN (SELECT value FROM json_each(:tiers))
)
SELECT id FROM reach
"""


@dataclass(frozen=True)
class Level:
    """One level of grouping: which pairs connect, where memberships live, and where ids come from."""

    table: str  # file_id -> group_id
    tiers: tuple[Tier, ...]
    counter: str  # meta key of the next new id
    last: str  # files column: the group a file is in or was last in


DUPLICATES = Level("members", DUPLICATE_TIERS, "next_group_id", "last_group")
SHOTS = Level("shots", tuple(Tier), "next_shot_id", "last_shot")


class Graph:
    def __init__(self, db: sqlite_utils.Database, meta: Meta, decisions: Decisions) -> None:
        self.db = db
        self.meta = meta
        self.decisions = decisions

    def add_pair(self, p: PairRecord) -> None:
        a, b = sorted((p.a, p.b))
        self.db.execute(
            "INSERT OR REPLACE INTO pairs "
            "(a, b, kind, hamming, cosine, view, inliers, overlap, changed, scattered, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                a,
                b,
                str(p.tier),
                p.hamming,
                round(float(p.cosine), 5),
                p.view,
                p.inliers,
                _rounded(p.overlap),
                _rounded(p.changed),
                _rounded(p.scattered),
                time.time(),
            ],
        )

    def drop_pairs(self, file_ids: Iterable[int]) -> None:
        """The files' content changed: what they matched before is no longer evidence."""
        for fid in file_ids:
            self.db.execute("DELETE FROM pairs WHERE a = ? OR b = ?", [fid, fid])

    def group_of(self, file_id: int, level: Level = DUPLICATES) -> int | None:
        row = self.db.execute(f"SELECT group_id FROM {level.table} WHERE file_id = ?", [file_id]).fetchone()
        return None if row is None else int(row[0])

    def copies_of(self, file_id: int) -> set[int]:
        """The files known to be copies of this one: its duplicate group, and its exact and copy partners (a batch
        in progress is not grouped yet)."""
        tiers = json.dumps([str(t) for t in DUPLICATE_TIERS])
        rows = self.db.execute(
            "SELECT b FROM pairs WHERE a = :f AND kind IN (SELECT value FROM json_each(:t)) "
            "UNION SELECT a FROM pairs WHERE b = :f AND kind IN (SELECT value FROM json_each(:t)) "
            "UNION SELECT file_id FROM members WHERE group_id = (SELECT group_id FROM members WHERE file_id = :f)",
            {"f": file_id, "t": tiers},
        )
        return {int(r[0]) for r in rows} - {file_id}

    def unverified_files(self) -> set[str]:
        """Paths of live files with copy pairs that carry no detail evidence: recorded before tiers existed."""
        rows = self.db.execute(
            "SELECT f.path FROM files f WHERE f.status = :ok AND EXISTS (SELECT 1 FROM pairs p WHERE "
            "(p.a = f.id OR p.b = f.id) AND p.kind = :copy AND p.overlap IS NULL AND p.inliers IS NOT NULL)",
            {"ok": _OK, "copy": str(Tier.COPY)},
        )
        return {from_db(r[0]) for r in rows}

    def group_members(self, group_id: int, level: Level = DUPLICATES) -> list[int]:
        rows = self.db.execute(f"SELECT file_id FROM {level.table} WHERE group_id = ?", [group_id])
        return [int(r[0]) for r in rows]

    def regroup(self, seeds: Iterable[int]) -> None:
        """Recompute the duplicate groups and the similar-shot groups that `seeds` belong or belonged to."""
        seeds = sorted(set(seeds))
        for level in (DUPLICATES, SHOTS):
            self._regroup(seeds, level)

    def _regroup(self, seeds: list[int], level: Level) -> None:
        """Recompute the groups of one level that `seeds` belong or belonged to, keeping group ids stable.

        The affected sub-graph is loaded in a few queries whatever its size: the seeds, their partners and the
        members of their groups; every live file reachable from those (one recursive query); then the pairs among
        them. Components are closed over live files only, so a file that left splits its group where it was the
        bridge. A component keeps the smallest old group id among its members that no other component claimed
        first; new components get fresh ids that are never reused.
        """
        if not seeds:
            return
        tiers = json.dumps([str(t) for t in level.tiers])
        start = self._neighbourhood(seeds, level)
        nodes = [int(r[0]) for r in self.db.execute(_REACH, {"start": json.dumps(start), "ok": _OK, "tiers": tiers})]
        ids = json.dumps(nodes)
        info = self.db.execute(
            f"SELECT f.id, f.status, f.content_hash, m.group_id, f.{level.last} FROM json_each(?) j "
            f"JOIN files f ON f.id = j.value LEFT JOIN {level.table} m ON m.file_id = f.id",
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
            "AND b IN (SELECT value FROM json_each(:ids)) AND kind IN (SELECT value FROM json_each(:tiers))",
            {"ids": ids, "tiers": tiers},
        ):
            if a in live and b in live and content_key(live[a], live[b]) not in ignored:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        components: dict[int, list[int]] = {}
        for n in nodes:
            components.setdefault(find(n), []).append(n)

        self.db.execute(f"DELETE FROM {level.table} WHERE file_id IN (SELECT value FROM json_each(?))", [ids])
        claimed: set[int] = set()
        next_id = self.meta.get_int(level.counter, 1)
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
                candidates = [
                    g for g in sorted({g for g in previous if g is not None} - claimed) if not self._held(g, level)
                ]
            if candidates:
                gid = candidates[0]
            else:
                gid, next_id = next_id, next_id + 1
            claimed.add(gid)
            rows += [(fid, gid) for fid in comp]
        self.db.execute(
            f"INSERT INTO {level.table} (file_id, group_id) "
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)",
            [json.dumps(rows)],
        )
        # every file remembers the group it is in, or was last in
        remembered = dict(old) | dict(rows)
        self.db.execute(
            f"UPDATE files SET {level.last} = json_extract(j.value, '$[1]') FROM json_each(?) j "
            "WHERE files.id = json_extract(j.value, '$[0]')",
            [json.dumps(sorted(remembered.items()))],
        )
        self.meta.set(level.counter, next_id)

    def _held(self, group_id: int, level: Level) -> bool:
        """Does some group (outside the files being regrouped, whose rows were just cleared) hold this id?"""
        sql = f"SELECT 1 FROM {level.table} WHERE group_id = ? LIMIT 1"
        return self.db.execute(sql, [group_id]).fetchone() is not None

    def _neighbourhood(self, seeds: list[int], level: Level) -> list[int]:
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
                f"SELECT file_id FROM {level.table} WHERE group_id IN "
                f"(SELECT group_id FROM {level.table} WHERE file_id IN (SELECT value FROM json_each(?)))",
                [json.dumps(sorted(near))],
            )
        }
        return sorted(near | grouped)


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
