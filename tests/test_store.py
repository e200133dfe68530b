"""The SQLite store: migrations, signed hashes, stable group ids, regrouping in a few queries, a locked database."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

import dupwatch.daemon.store.database as database
from dupwatch.daemon.records import FileRow, FileStatus, PairRecord, Tier
from dupwatch.daemon.store import Store, StoreError
from dupwatch.daemon.store.graph import SHOTS


def _file(store: Store, name: str, gen: int, ahash: int = 0) -> int:
    row = FileRow(path=f"/p/{name}", size=1, mtime_ns=1, status=FileStatus.OK, ahash=ahash, chash=0, content_hash=name)
    return store.files.save(row, gen)


def test_migrations_are_recorded_and_a_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    s = Store(db)
    applied = [r[0] for r in s.db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'dupwatch'")]
    assert applied == ["m001_initial", "m002_file_notes", "m003_last_group", "m004_tiers", "m005_keepers"]
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.db.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('dupwatch', 'm999_future', 'now')"
    )
    s.db.conn.commit()
    s.close()
    with pytest.raises(StoreError, match="newer dupwatch"):
        Store(db)


def _schema_1(db: Path) -> sqlite3.Connection:
    """A database as the first dupwatch made it: the schema, no migrations recorded."""
    conn = sqlite3.connect(db)
    for sql in database._SCHEMA_1:
        conn.execute(sql)
    return conn


def test_a_database_from_before_migrations_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    """Version 1 databases carry the schema and a meta schema_version, but no migrations table."""
    db = tmp_path / "old.db"
    conn = _schema_1(db)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO files (path, size, mtime_ns, status) VALUES ('/p/a.jpg', 3, 4, 'ok')")
    conn.commit()
    conn.close()
    s = Store(db)
    rec = s.files.by_path("/p/a.jpg")
    assert rec is not None and (rec.size, rec.mtime_ns, rec.status) == (3, 4, FileStatus.OK)
    assert [r[0] for r in s.db.execute("SELECT name FROM _sqlite_migrations")] == [
        "m001_initial",
        "m002_file_notes",
        "m003_last_group",
        "m004_tiers",
        "m005_keepers",
    ]


def test_near_pairs_of_an_older_database_become_copies_and_its_groups_the_first_shot_groups(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    conn = _schema_1(db)
    conn.execute("ALTER TABLE files ADD COLUMN notes TEXT")
    conn.execute("ALTER TABLE files ADD COLUMN last_group INTEGER")
    for n in (1, 2):
        conn.execute("INSERT INTO files (id, path, size, mtime_ns, status) VALUES (?, ?, 1, 1, 'ok')", [n, f"/p/{n}"])
    conn.execute("INSERT INTO pairs (a, b, kind, hamming, cosine) VALUES (1, 2, 'near', 3, 0.9)")
    conn.execute("INSERT INTO members (file_id, group_id) VALUES (1, 7), (2, 7)")
    conn.execute("INSERT INTO meta (key, value) VALUES ('next_group_id', '8')")
    conn.execute("CREATE TABLE _sqlite_migrations (migration_set TEXT, name TEXT, applied_at TEXT)")
    for name in ("m001_initial", "m002_file_notes", "m003_last_group"):
        conn.execute("INSERT INTO _sqlite_migrations VALUES ('dupwatch', ?, 'then')", [name])
    conn.commit()
    conn.close()
    s = Store(db)
    [pair] = s.read.pairs_within([1, 2])
    assert pair.tier == Tier.COPY
    assert s.meta.get("rematch_legacy") == "1"  # the next scan verifies them in detail (test_tiers)
    assert s.graph.group_of(1) == 7 and s.graph.group_of(1, SHOTS) == 7
    with s.atomic():
        s.graph.add_pair(PairRecord(2, _file(s, "c", 1), Tier.SIMILAR, 1, 0.9))
        s.graph.regroup([2])
    assert s.graph.group_of(3) is None and s.graph.group_of(3, SHOTS) == 7  # similar: same shot, not a duplicate


def test_similar_pairs_make_shot_groups_holding_duplicate_groups(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    with s.atomic():
        a, b, c, d = (_file(s, n, 1) for n in "abcd")
        s.graph.add_pair(PairRecord(a, b, Tier.COPY, 1, 0.97))
        s.graph.add_pair(PairRecord(c, d, Tier.EXACT, 0, 1.0))
        s.graph.add_pair(PairRecord(b, c, Tier.SIMILAR, 5, 0.9))
        s.graph.regroup([a, b, c, d])
    dup = {f: s.graph.group_of(f) for f in (a, b, c, d)}
    assert dup[a] == dup[b] and dup[c] == dup[d] and dup[a] != dup[c]
    shots = {s.graph.group_of(f, SHOTS) for f in (a, b, c, d)}
    assert len(shots) == 1 and None not in shots
    with s.atomic():  # the burst frame goes: the shot group splits along the duplicate groups
        s.files.set_status([c, d], FileStatus.DELETED, 2)
        s.graph.regroup([c, d])
    assert s.graph.group_of(a, SHOTS) == s.graph.group_of(b, SHOTS) is not None
    assert s.graph.group_of(c, SHOTS) is None


def test_unsigned_64_bit_hashes_survive(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    fid = _file(s, "a.jpg", 1, ahash=(1 << 64) - 3)
    rec = s.files.get(fid)
    assert rec is not None and rec.ahash == (1 << 64) - 3
    ids, ahashes, _ = s.files.live_hashes()
    assert int(ahashes[list(ids).index(fid)]) == (1 << 64) - 3
    other = _file(s, "b.jpg", 2, ahash=5)
    ids, ahashes, _ = s.files.live_hashes([fid])  # only those asked for (a pipeline catching up)
    assert ids.tolist() == [fid] and int(ahashes[0]) == (1 << 64) - 3
    assert s.files.live_hashes([other])[0].tolist() == [other]


def test_groups_are_components_with_stable_ids(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    with s.atomic():
        a, b, c, d, e = (_file(s, n, 1) for n in "abcde")
        s.graph.add_pair(PairRecord(a, b, Tier.COPY, 2, 0.95))
        s.graph.add_pair(PairRecord(b, c, Tier.COPY, 3, 0.93))
        s.graph.add_pair(PairRecord(d, e, Tier.EXACT, 0, 1.0))
        s.graph.regroup([a, b, c, d, e])
    g1, g2 = s.graph.group_of(a), s.graph.group_of(d)
    assert g1 is not None and g2 is not None and g1 != g2
    assert s.graph.group_of(b) == s.graph.group_of(c) == g1
    assert sorted(s.graph.group_members(g1)) == [a, b, c]
    with s.atomic():  # b disappears: a and c no longer connect, and neither is a group on its own
        s.files.set_status([b], FileStatus.DELETED, 2)
        s.graph.regroup([b])
    assert s.graph.group_of(a) is None and s.graph.group_of(c) is None and s.graph.group_of(b) is None
    with s.atomic():
        f = _file(s, "f", 3)
        s.graph.add_pair(PairRecord(a, f, Tier.COPY, 1, 0.99))
        s.graph.regroup([a, f])
    new = s.graph.group_of(a)
    assert new is not None and new == s.graph.group_of(f) and new not in (g1, g2)  # ids are never reused
    assert s.graph.group_of(d) == g2  # untouched groups keep theirs


def test_a_split_group_keeps_its_id_on_the_part_with_the_smallest_ids(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    with s.atomic():
        a, b, c, d, e = (_file(s, n, 1) for n in "abcde")
        for x, y in ((a, b), (b, c), (c, d), (d, e)):
            s.graph.add_pair(PairRecord(x, y, Tier.COPY, 1, 0.9))
        s.graph.regroup([a])
    gid = s.graph.group_of(a)
    assert gid is not None and sorted(s.graph.group_members(gid)) == [a, b, c, d, e]
    with s.atomic():
        s.files.set_status([c], FileStatus.DELETED, 2)
        s.graph.regroup([c])
    assert s.graph.group_of(a) == s.graph.group_of(b) == gid
    other = s.graph.group_of(d)
    assert other is not None and other != gid and s.graph.group_of(e) == other


def test_ignored_pairs_do_not_connect(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    with s.atomic():
        a, b, c = (_file(s, n, 1) for n in "abc")
        s.graph.add_pair(PairRecord(a, b, Tier.COPY, 1, 0.9))
        s.graph.add_pair(PairRecord(b, c, Tier.COPY, 1, 0.9))
        s.decisions.ignore("b", "c")  # by content: the content hashes of b and c are their names here
        s.graph.regroup([a, b, c])
    assert s.graph.group_of(a) == s.graph.group_of(b) is not None
    assert s.graph.group_of(c) is None


def test_regrouping_a_large_group_takes_a_few_queries_not_one_per_file(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    with s.atomic():
        ids = [_file(s, f"f{i}", 1) for i in range(300)]
        for x, y in itertools.pairwise(ids):  # one long chain: the worst case for a per-node walk
            s.graph.add_pair(PairRecord(x, y, Tier.COPY, 1, 0.9))
    statements: list[str] = []
    s.db.conn.set_trace_callback(statements.append)
    with s.atomic():
        s.graph.regroup([ids[150]])
    s.db.conn.set_trace_callback(None)
    gid = s.graph.group_of(ids[0])
    assert gid is not None and len(s.graph.group_members(gid)) == 300
    queries = [q for q in statements if not q.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]
    assert len(queries) < 30, queries  # a constant number per level (duplicate, similar shot), whatever the size


def test_a_locked_database_waits_for_the_busy_timeout_then_fails(tmp_path: Path) -> None:
    """Readers are never blocked (WAL); a write waits `busy_timeout` for another writer, then fails."""
    db = tmp_path / "s.db"
    Store(db).close()
    blocker = sqlite3.connect(db)
    blocker.execute("BEGIN EXCLUSIVE")
    s = Store(db, busy_timeout=0.2)
    assert s.read.counts()["files"] == 0
    with pytest.raises(sqlite3.OperationalError, match="locked"), s.atomic():
        s.next_gen()
    blocker.rollback()
    with s.atomic():
        assert s.next_gen() == 1


def test_a_transaction_that_reads_first_survives_another_writers_commit(tmp_path: Path) -> None:
    """Two writers on one database (the daemon and the web app inside `watch --serve`): a transaction that read
    before another connection committed must still write. A deferred BEGIN failed at once with "database is
    locked" (the snapshot could not be upgraded) and stopped the daemon; BEGIN IMMEDIATE makes the other wait."""
    import threading
    import time

    db = tmp_path / "two.db"
    Store(db).close()
    errors: list[BaseException] = []

    def other_writer() -> None:
        try:
            b = Store(db, busy_timeout=10)
            with b.atomic():
                b.next_gen()
            b.close()
        except BaseException as e:  # reported below
            errors.append(e)

    a = Store(db)
    with a.atomic():
        seen = a.gen
        t = threading.Thread(target=other_writer)
        t.start()
        time.sleep(0.5)  # the other writer has committed by now (deferred) or is waiting for us (immediate)
        a.meta.set("mine", seen)
    t.join(20)
    assert not errors, errors
    assert a.gen == seen + 1 and a.meta.get("mine") == str(seen)
    a.close()
