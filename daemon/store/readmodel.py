"""The read side for reports and `status`: groups with their records, the pairs inside a group, unreadable files,
counts. Nothing here writes."""

from __future__ import annotations

from collections.abc import Sequence

import sqlite_utils

from dupwatch.daemon.records import FileRecord, FileStatus, PairKind, PairRecord
from dupwatch.daemon.store.files import Files, record_from_row


class ReadModel:
    def __init__(self, db: sqlite_utils.Database, files: Files) -> None:
        self.db = db
        self.files = files

    def groups(self) -> list[tuple[int, list[FileRecord]]]:
        """Every group with its members, by group id."""
        rows = self.db.execute("SELECT group_id, file_id FROM members ORDER BY group_id, file_id").fetchall()
        recs = self.files.many(fid for _, fid in rows)
        out: dict[int, list[FileRecord]] = {}
        for gid, fid in rows:
            out.setdefault(gid, []).append(recs[fid])
        return sorted(out.items())

    def pairs_within(self, file_ids: Sequence[int]) -> list[PairRecord]:
        ids = list(file_ids)
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT a, b, kind, hamming, cosine, view, inliers FROM pairs WHERE a IN ({marks}) AND b IN ({marks}) "
            "ORDER BY a, b",
            ids + ids,
        ).fetchall()
        return [PairRecord(a, b, PairKind(kind), *rest) for a, b, kind, *rest in rows]

    def errors(self) -> list[FileRecord]:
        return [
            record_from_row(r)
            for r in self.db.query("SELECT * FROM files WHERE status = ? ORDER BY path", [str(FileStatus.ERROR)])
        ]

    def counts(self) -> dict[str, int]:
        by_status = dict(self.db.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall())
        groups, grouped = self.db.execute("SELECT count(DISTINCT group_id), count(*) FROM members").fetchone()
        pairs = self.db.execute("SELECT count(*) FROM pairs").fetchone()[0]
        return {
            "files": by_status.get(str(FileStatus.OK), 0),
            "errors": by_status.get(str(FileStatus.ERROR), 0),
            "deleted": by_status.get(str(FileStatus.DELETED), 0),
            "resolved": by_status.get(str(FileStatus.RESOLVED), 0),
            "groups": groups,
            "grouped_files": grouped,
            "pairs": pairs,
        }
