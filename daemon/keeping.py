"""The keeper chosen by hand: "keep this one" for the group a file is in, kept by content (so it survives renames
and rescans) and honoured by reports and `resolve` over the keeper rules."""

from __future__ import annotations

from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.daemon.store import Store
from dupwatch.daemon.store.graph import DUPLICATES, Level


class KeepError(Exception):
    """A keeper that cannot be chosen (a file in no group, unreadable, gone)."""


def keep(store: Store, rec: FileRecord, level: Level = DUPLICATES) -> int:
    """Make `rec` the keeper of its group at `level`; returns the group's id."""
    if rec.status != FileStatus.OK or rec.content_hash is None:
        raise KeepError(f"{rec.path} is not a live, readable file in the database")
    gid = store.graph.group_of(rec.id, level)
    if gid is None:
        raise KeepError(f"{rec.path} is in no group")
    members = store.files.many(store.graph.group_members(gid, level)).values()
    others = {o.content_hash for o in members if o.content_hash} - {rec.content_hash}
    with store.atomic():
        store.decisions.choose_keeper(rec.content_hash, others)
    return gid
