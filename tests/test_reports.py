"""The report model read back from a real store filled by hand, and its renderings (JSON, CSV, table)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from rich.console import Console

from dupwatch.daemon.keeper import KeeperPolicy
from dupwatch.daemon.records import FileRow, FileStatus, PairRecord, Tier
from dupwatch.daemon.reports import build_report, summary, to_json, write_csv, write_table
from dupwatch.daemon.store import Store


def _add(store: Store, path: str, size: int, width: int, sharpness: float = 100.0) -> int:
    row = FileRow(
        path=path,
        size=size,
        mtime_ns=1,
        status=FileStatus.OK,
        content_hash=path,
        width=width,
        height=width,
        format="JPEG",
        sharpness=sharpness,
        exif_fields=3,
    )
    return store.files.save(row, 1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "r.db")
    with s.atomic():
        small = [_add(s, f"/p/small/{n}.jpg", 1_000, 100) for n in "ab"]
        big = [_add(s, "/p/big/orig.jpg", 5_000_000, 4000), _add(s, "/p/big/copy.jpg", 3_000_000, 2000)]
        ref = _add(s, "/archive/big.jpg", 4_000_000, 3000)
        s.graph.add_pair(PairRecord(small[0], small[1], Tier.EXACT, 0, 1.0))
        s.graph.add_pair(PairRecord(big[0], big[1], Tier.COPY, 3, 0.97, view=1, inliers=80))
        s.graph.add_pair(PairRecord(big[0], ref, Tier.COPY, 2, 0.95, inliers=60))
        s.files.save(FileRow(path="/p/bad.jpg", size=9, mtime_ns=1, status=FileStatus.ERROR, error="truncated"), 1)
        s.graph.regroup([*small, *big, ref])
    return s


def test_groups_are_sorted_by_reclaimable_space_with_their_keeper(store: Store) -> None:
    rep = build_report(store, KeeperPolicy(reference_dirs=("/archive",)))
    big, small = rep.groups
    assert [m.path for m in big.members] == ["/archive/big.jpg", "/p/big/copy.jpg", "/p/big/orig.jpg"]
    assert big.keeper == "/archive/big.jpg" and big.keeper_reason == "in a reference folder"
    assert big.reclaimable == 8_000_000  # the reference file is never counted as removable
    rot = next(p for p in big.pairs if p.view != "identity")
    assert (rot.view, rot.inliers, rot.tier) == ("rot90", 80, Tier.COPY)
    assert small.keeper == "/p/small/a.jpg" and small.keeper_reason == "first by path"
    assert small.reclaimable == 1_000
    assert [(e.path, e.error) for e in rep.errors] == [("/p/bad.jpg", "truncated")]
    without_refs = build_report(store)
    assert without_refs.groups[0].keeper == "/p/big/orig.jpg"
    assert without_refs.groups[0].keeper_reason == "best by resolution"


def test_json_and_summary(store: Store) -> None:
    rep = build_report(store)
    data = to_json(rep)
    assert (
        data["summary"]
        == summary(rep)
        == {
            "groups": 2,
            "files": 5,
            "reclaimable_bytes": 7_000_000 + 1_000,
            "errors": 1,
        }
    )
    g = data["groups"][0]
    assert {"id", "members", "pairs", "keeper", "reclaimable"} <= set(g)
    assert g["pairs"][0]["kind"] == "near"


def test_csv_has_one_row_per_file_and_one_per_error(store: Store) -> None:
    out = io.StringIO()
    write_csv(build_report(store), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 6
    keeper = next(r for r in rows if r["path"] == "/p/big/orig.jpg")
    assert (keeper["keeper"], keeper["reclaimable"]) == ("yes", "0")
    copy = next(r for r in rows if r["path"] == "/p/big/copy.jpg")
    assert (copy["keeper"], copy["reclaimable"]) == ("no", "3000000")
    assert rows[-1]["error"] == "truncated" and rows[-1]["group"] == ""


def test_table_names_groups_sizes_and_unreadable_files(store: Store) -> None:
    console = Console(record=True, width=200)
    write_table(build_report(store), console)
    text = " ".join(console.export_text().split())  # titles wrap at the table's width
    assert "2 duplicate groups, 5 files, 6.7 MB reclaimable" in text
    assert "keep: best by resolution" in text and "4000x4000" in text
    assert "1 files could not be read" in text and "truncated" in text
