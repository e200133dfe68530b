"""Duplicate reports read back from the store: one model, several renderings (table, JSON, CSV).

The JSON shape is a contract that scripts and benchmarks rely on (see README): keys may be added, never renamed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dupwatch.daemon.keeper import DEFAULT_RULES, choose
from dupwatch.daemon.records import FileRecord, PairKind
from dupwatch.daemon.store import Store
from dupwatch.hashing.views import describe


@dataclass
class Member:
    path: str
    size: int
    width: int | None
    height: int | None
    format: str | None = None
    taken_at: str | None = None
    sharpness: float | None = None
    notes: str | None = None


@dataclass
class Pair:
    a: str
    b: str
    kind: PairKind
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
    keeper: str = ""  # path of the file the keeper rule would keep
    keeper_reason: str = ""
    reclaimable: int = 0  # bytes freed by removing the others (reference-folder files are never counted)
    protected: list[str] = field(default_factory=list)


@dataclass
class BadFile:
    path: str
    error: str


@dataclass
class Report:
    groups: list[Group] = field(default_factory=list)
    errors: list[BadFile] = field(default_factory=list)

    @property
    def reclaimable(self) -> int:
        return sum(g.reclaimable for g in self.groups)


def _member(r: FileRecord) -> Member:
    m = Member(**{f.name: getattr(r, f.name) for f in fields(Member)})
    m.sharpness = None if m.sharpness is None else round(m.sharpness, 1)
    return m


def build_report(store: Store, rules: Sequence[str] = DEFAULT_RULES, reference_dirs: Sequence[str] = ()) -> Report:
    """Groups sorted by reclaimable space, largest first, each with its proposed keeper."""
    report = Report()
    for gid, recs in store.read.groups():
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
            for p in store.read.pairs_within([r.id for r in recs])
        ]
        members = [_member(r) for r in sorted(recs, key=lambda r: r.path)]
        d = choose(recs, rules, reference_dirs)
        report.groups.append(
            Group(
                gid,
                members,
                pairs,
                sum(m.size for m in members),
                keeper=d.keeper.path,
                keeper_reason=d.reason,
                reclaimable=sum(r.size for r in d.remove),
                protected=[p.path for p in d.protected],
            )
        )
    report.groups.sort(key=lambda g: (-g.reclaimable, g.id))
    report.errors = [BadFile(r.path, r.error or "unknown error") for r in store.read.errors()]
    return report


def to_json(report: Report) -> dict[str, Any]:
    return {
        "groups": [asdict(g) for g in report.groups],
        "errors": [asdict(e) for e in report.errors],
        "summary": summary(report),
    }


def summary(report: Report) -> dict[str, int]:
    return {
        "groups": len(report.groups),
        "files": sum(len(g.members) for g in report.groups),
        "reclaimable_bytes": report.reclaimable,
        "errors": len(report.errors),
    }


CSV_COLUMNS = (
    "group",
    "path",
    "size",
    "width",
    "height",
    "format",
    "taken_at",
    "sharpness",
    "keeper",
    "reclaimable",
    "error",
)


def write_csv(report: Report, out: IO[str]) -> None:
    """One row per file: group members first, then files that could not be read (group empty, error set)."""
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for g in report.groups:
        for m in g.members:
            keep = m.path == g.keeper or m.path in g.protected
            w.writerow(
                [
                    g.id,
                    m.path,
                    m.size,
                    m.width,
                    m.height,
                    m.format,
                    m.taken_at,
                    m.sharpness,
                    "yes" if keep else "no",
                    0 if keep else m.size,
                    "",
                ]
            )
    for e in report.errors:
        w.writerow(["", e.path, "", "", "", "", "", "", "", "", e.error])


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def write_table(report: Report, console: Console) -> None:
    s = summary(report)
    console.print(f"{s['groups']} duplicate groups, {s['files']} files, {_size(s['reclaimable_bytes'])} reclaimable")
    for g in report.groups:
        best: dict[str, float] = {}
        for p in g.pairs:
            for path in (p.a, p.b):
                best[path] = max(best.get(path, 0.0), p.cosine)
        t = Table(
            title=f"group {g.id}: {len(g.members)} files, {_size(g.reclaimable)} reclaimable; keep: {g.keeper_reason}",
            title_justify="left",
        )
        t.add_column("", width=4)
        t.add_column("path", overflow="fold")
        t.add_column("size", justify="right")
        t.add_column("pixels", justify="right")
        t.add_column("best match", justify="right")
        for m in g.members:
            px = f"{m.width}x{m.height}" if m.width else "?"
            mark = "keep" if m.path == g.keeper else ("ref" if m.path in g.protected else "")
            t.add_row(mark, Text(m.path), _size(m.size), px, f"{best.get(m.path, 0):.3f}")
        console.print(t)
    if report.errors:
        t = Table(title=f"{len(report.errors)} files could not be read", title_justify="left")
        t.add_column("path", overflow="fold")
        t.add_column("reason")
        for e in report.errors:
            t.add_row(Text(e.path), Text(e.error))
        console.print(t)
