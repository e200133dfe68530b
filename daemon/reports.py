"""Duplicate reports read back from the store: one model, several renderings (table, JSON, CSV).

The JSON shape is a contract that scripts and benchmarks rely on (see README): keys may be added, never renamed.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from daemon.store import FileRecord, Store
from hashing.views import describe


@dataclass
class Member:
    path: str
    size: int
    width: int | None
    height: int | None
    format: str | None = None
    taken_at: str | None = None
    sharpness: float | None = None


@dataclass
class Pair:
    a: str
    b: str
    kind: str
    hamming: int
    cosine: float
    inliers: int | None = None
    view: str = "identity"


@dataclass
class Group:
    id: int
    members: list[Member]
    pairs: list[Pair]
    bytes: int = 0


@dataclass
class BadFile:
    path: str
    error: str


@dataclass
class Report:
    groups: list[Group] = field(default_factory=list)
    errors: list[BadFile] = field(default_factory=list)


def _member(r: FileRecord) -> Member:
    return Member(
        path=r.path,
        size=r.size,
        width=r.width,
        height=r.height,
        format=r.format,
        taken_at=r.taken_at,
        sharpness=None if r.sharpness is None else round(r.sharpness, 1),
    )


def build_report(store: Store) -> Report:
    report = Report()
    for gid, recs in store.groups():
        by_id = {r.id: r for r in recs}
        pairs = [
            Pair(
                a=by_id[p.a].path,
                b=by_id[p.b].path,
                kind=p.kind,
                hamming=p.hamming,
                cosine=round(p.cosine, 4),
                inliers=p.inliers,
                view=describe(p.view),
            )
            for p in store.pairs_within([r.id for r in recs])  # type: ignore[misc]
        ]
        members = [_member(r) for r in sorted(recs, key=lambda r: r.path)]
        report.groups.append(Group(gid, members, pairs, sum(m.size for m in members)))
    report.errors = [BadFile(r.path, r.error or "unknown error") for r in store.errors()]
    return report


def to_json(report: Report) -> dict[str, Any]:
    return {"groups": [asdict(g) for g in report.groups], "errors": [asdict(e) for e in report.errors]}


CSV_COLUMNS = ("group", "path", "size", "width", "height", "format", "taken_at", "sharpness", "error")


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per file: group members first, then files that could not be read (group empty, error set)."""
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for g in report.groups:
        for m in g.members:
            w.writerow([g.id, m.path, m.size, m.width, m.height, m.format, m.taken_at, m.sharpness, ""])
    for e in report.errors:
        w.writerow(["", e.path, "", "", "", "", "", "", e.error])


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def write_table(report: Report, console: Console) -> None:
    if not report.groups:
        console.print("No duplicate groups.")
    for g in report.groups:
        best = {}
        for p in g.pairs:
            for path in (p.a, p.b):
                best[path] = max(best.get(path, 0.0), p.cosine)
        t = Table(title=f"group {g.id}: {len(g.members)} files, {_size(g.bytes)}", title_justify="left")
        t.add_column("path", overflow="fold")
        t.add_column("size", justify="right")
        t.add_column("pixels", justify="right")
        t.add_column("best match", justify="right")
        for m in g.members:
            px = f"{m.width}x{m.height}" if m.width else "?"
            t.add_row(m.path, _size(m.size), px, f"{best.get(m.path, 0):.3f}")
        console.print(t)
    if report.errors:
        t = Table(title=f"{len(report.errors)} files could not be read", title_justify="left")
        t.add_column("path", overflow="fold")
        t.add_column("reason")
        for e in report.errors:
            t.add_row(e.path, e.error)
        console.print(t)
