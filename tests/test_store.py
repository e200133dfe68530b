"""The SQLite store: schema versioning, signed hashes, stable group ids, and a locked database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import daemon.store as store_mod
from daemon.store import OK, FileRecord, PairRecord, Store, StoreError


def _file(store: Store, name: str, gen: int, ahash: int = 0) -> int:
    return store.save_file(FileRecord(path=f"/p/{name}", size=1, mtime_ns=1, status=OK, ahash=ahash, chash=0), gen)


def test_schema_is_versioned_and_a_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    s = Store(db)
    assert s.get_meta("schema_version") == str(store_mod.SCHEMA_VERSION)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.set_meta("schema_version", str(store_mod.SCHEMA_VERSION + 1))
    s.close()
    with pytest.raises(StoreError, match="newer"):
        Store(db)


def test_unsigned_64_bit_hashes_survive(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    fid = _file(s, "a.jpg", 1, ahash=(1 << 64) - 3)
    assert s.get(fid).ahash == (1 << 64) - 3
    ids, ahashes, _ = s.live_hashes()
    assert int(ahashes[list(ids).index(fid)]) == (1 << 64) - 3


def test_groups_are_components_with_stable_ids(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    with s.atomic():
        a, b, c, d, e = (_file(s, n, 1) for n in "abcde")
        s.add_pair(PairRecord(a, b, "near", 2, 0.95))
        s.add_pair(PairRecord(b, c, "near", 3, 0.93))
        s.add_pair(PairRecord(d, e, "exact", 0, 1.0))
        s.regroup([a, b, c, d, e])
    g1, g2 = s.group_of(a), s.group_of(d)
    assert s.group_of(b) == s.group_of(c) == g1 and g1 != g2
    with s.atomic():  # b disappears: a and c no longer connect; one part keeps the id, the other gets a new one
        s.mark_deleted([b], 2)
        s.regroup([b])
    assert s.group_of(a) is None and s.group_of(c) is None and s.group_of(b) is None
    with s.atomic():
        f = _file(s, "f", 3)
        s.add_pair(PairRecord(a, f, "near", 1, 0.99))
        s.regroup([a, f])
    assert s.group_of(a) == s.group_of(f) not in (g1, g2)  # ids are never reused
    assert s.group_of(d) == g2  # untouched groups keep theirs


def test_a_locked_database_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.db"
    Store(db).close()
    blocker = sqlite3.connect(db)
    blocker.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    with pytest.raises(StoreError, match="locked"):
        Store(db)
    blocker.rollback()
    Store(db).close()
