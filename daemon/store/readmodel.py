"""The read side for reports and `status`: groups with their records, the pairs inside a group, unreadable files,
counts. Nothing here writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlite_utils

from dupwatch.daemon.records import FileRecord, FileStatus, PairRecord, Tier
from dupwatch.daemon.store.files import Files, record_from_row
from dupwatch.daemon.store.graph import DUPLICATES, Level


class ReadModel:
    def __init__(self, db: sqlite_utils.Database, files: Files) -> None:
        self.db = db
        self.files = files

    def groups(self, level: Level = DUPLICATES) -> list[tuple[int, list[FileRecord]]]:
        """Every group of a level (duplicate groups unless told) with its members, by group id."""
        rows = self.db.execute(f"SELECT group_id, file_id FROM {level.table} ORDER BY group_id, file_id").fetchall()
        recs = self.files.many(fid for _, fid in rows)
        out: dict[int, list[FileRecord]] = {}
        for gid, fid in rows:
            out.setdefault(gid, []).append(recs[fid])
        return sorted(out.items())

    def pairs_within(self, file_ids: Sequence[int]) -> list[PairRecord]:
        ids = list(file_ids)
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT {_PAIR_COLUMNS} FROM pairs WHERE a IN ({marks}) AND b IN ({marks}) ORDER BY a, b",
            ids + ids,
        ).fetchall()
        return [_pair(row) for row in rows]

    def live_pairs(self) -> list[PairRecord]:
        """Every pair between two live files (for re-filtering the stored evidence without a rescan)."""
        rows = self.db.execute(
            f"SELECT {', '.join('p.' + c for c in _PAIR_COLUMNS.split(', '))} FROM pairs p "
            "JOIN files fa ON fa.id = p.a AND fa.status = :ok JOIN files fb ON fb.id = p.b AND fb.status = :ok "
            "ORDER BY p.a, p.b",
            {"ok": str(FileStatus.OK)},
        ).fetchall()
        return [_pair(row) for row in rows]

    def errors(self) -> list[FileRecord]:
        return [
            record_from_row(r)
            for r in self.db.query("SELECT * FROM files WHERE status = ? ORDER BY path", [str(FileStatus.ERROR)])
        ]

    def counts(self) -> dict[str, int]:
        by_status = dict(self.db.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall())
        groups, grouped = self.db.execute("SELECT count(DISTINCT group_id), count(*) FROM members").fetchone()
        pairs = self.db.execute("SELECT count(*) FROM pairs").fetchone()[0]
        shots = self.db.execute("SELECT count(DISTINCT group_id) FROM shots").fetchone()[0]
        return {
            "files": by_status.get(str(FileStatus.OK), 0),
            "errors": by_status.get(str(FileStatus.ERROR), 0),
            "deleted": by_status.get(str(FileStatus.DELETED), 0),
            "resolved": by_status.get(str(FileStatus.RESOLVED), 0),
            "groups": groups,
            "similar_groups": shots,
            "grouped_files": grouped,
            "pairs": pairs,
        }


_PAIR_COLUMNS = "a, b, kind, hamming, cosine, view, inliers, overlap, changed, scattered"


def _pair(row: tuple[Any, ...]) -> PairRecord:
    a, b, kind, hamming, cosine, view, inliers, overlap, changed, scattered = row
    return PairRecord(a, b, Tier(kind), hamming, cosine, view, inliers, overlap, changed, scattered)
