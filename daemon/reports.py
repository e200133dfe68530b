"""Duplicate reports read back from the store: one model, several renderings (table, JSON, CSV).

The JSON shape is a contract that scripts and benchmarks rely on (see README): keys may be added, never renamed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dupwatch.daemon.components import components
from dupwatch.daemon.files import is_under
from dupwatch.daemon.keeper import KeeperPolicy, choose
from dupwatch.daemon.records import DUPLICATE_TIERS, FileRecord, PairRecord, Tier
from dupwatch.daemon.store import Store
from dupwatch.daemon.store.decisions import content_key
from dupwatch.daemon.store.graph import DUPLICATES, SHOTS
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
    content_hash: str | None = None  # the key of its thumbnail in the cache (and of the decisions about it)


@dataclass
class Pair:
    a: str
    b: str
    tier: Tier
    hamming: int
    cosine: float
    inliers: int | None = None
    view: str = "identity"
    overlap: float | None = None  # the evidence for the tier (hashing.detail)
    changed: float | None = None
    kind: str = ""  # before tiers: "exact" or "near" (any other tier); kept for scripts that read it

    def __post_init__(self) -> None:
        self.kind = "exact" if self.tier == Tier.EXACT else "near"


@dataclass(frozen=True)
class Filters:
    """Re-deciding from the stored evidence, without a rescan: pairs below these are left out before grouping.
    Exact pairs always stay."""

    min_cosine: float | None = None
    min_inliers: int | None = None

    def keep(self, p: PairRecord) -> bool:
        if p.tier == Tier.EXACT:
            return True
        if self.min_cosine is not None and p.cosine < self.min_cosine:
            return False
        return self.min_inliers is None or (p.inliers or 0) >= self.min_inliers

    @property
    def active(self) -> bool:
        return self.min_cosine is not None or self.min_inliers is not None


@dataclass
class Group:
    id: int
    members: list[Member]
    pairs: list[Pair]
    tier: str = "copy"  # "copy": a duplicate group (exact and copy pairs); "similar": a similar-shot group
    label: str = "copies"  # what the group is, in words: "copies" or "similar shots"
    copies: list[int] = field(default_factory=list)  # in a similar-shot group: the duplicate groups inside it
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
    roots: list[str] = field(default_factory=list)  # the scanned folders (paths are shown relative to them)
    tier: str = "copy"  # which groups: duplicate groups ("copy") or similar-shot groups ("similar")

    @property
    def noun(self) -> str:
        return "similar-shot groups" if self.tier == Tier.SIMILAR else "duplicate groups"

    @property
    def reclaimable(self) -> int:
        return sum(g.reclaimable for g in self.groups)


def _member(r: FileRecord) -> Member:
    m = Member(**{f.name: getattr(r, f.name) for f in fields(Member)})
    m.sharpness = None if m.sharpness is None else round(m.sharpness, 1)
    return m


def _groups(
    store: Store, similar: bool, filters: Filters
) -> list[tuple[int, list[FileRecord], list[PairRecord], list[int]]]:
    """(id, members, pairs, duplicate groups inside) per group of the level asked for. Without filters these are
    the stored groups; with them, the components of the stored pairs that pass, named after the stored group
    that holds their first member."""
    level = SHOTS if similar else DUPLICATES
    tiers = tuple(Tier) if similar else DUPLICATE_TIERS
    out: list[tuple[int, list[FileRecord], list[PairRecord], list[int]]] = []
    if not filters.active:
        for gid, members in store.read.groups(level):
            ids = [r.id for r in members]
            out.append((gid, members, [p for p in store.read.pairs_within(ids) if p.tier in tiers], []))
    else:
        pairs = [p for p in store.read.live_pairs() if p.tier in tiers and filters.keep(p)]
        recs = store.files.many({i for p in pairs for i in (p.a, p.b)})
        ignored = store.decisions.ignored()
        pairs = [p for p in pairs if content_key(recs[p.a].content_hash, recs[p.b].content_hash) not in ignored]
        comps = sorted(sorted(c) for c in components((p.a, p.b) for p in pairs))
        where = {f: n for n, comp in enumerate(comps) for f in comp}
        within: list[list[PairRecord]] = [[] for _ in comps]
        for p in pairs:
            within[where[p.a]].append(p)
        used: set[int] = set()
        unnamed: list[int] = []
        for n, comp in enumerate(comps):
            stored_id = store.graph.group_of(comp[0], level)
            if stored_id is None or stored_id in used:
                unnamed.append(n)
                continue
            used.add(stored_id)
            out.append((stored_id, [recs[i] for i in comp], within[n], []))
        # groups that only these filters make get ids no stored group has ever had (`resolve` does not know them)
        fresh = max(store.meta.get_int(level.counter, 1), max(used, default=0) + 1)
        for k, n in enumerate(unnamed):
            out.append((fresh + k, [recs[i] for i in comps[n]], within[n], []))
    if similar:
        for _, found, _, inside in out:
            inside.extend(sorted({g for r in found if (g := store.graph.group_of(r.id)) is not None}))
    return out


def build_report(
    store: Store, policy: KeeperPolicy | None = None, similar: bool = False, filters: Filters | None = None
) -> Report:
    """Groups sorted by reclaimable space, largest first, each with its proposed keeper: the duplicate groups, or
    with `similar` the similar-shot groups (keeping the best shot: `KeeperPolicy.best_shot`); `filters` re-decide
    from the stored evidence."""
    if similar:
        policy = (policy or KeeperPolicy()).best_shot()
    report = Report(tier=str(Tier.SIMILAR if similar else Tier.COPY))
    chosen = store.decisions.keepers()
    for gid, recs, stored_pairs, inside in _groups(store, similar, filters or Filters()):
        by_id = {r.id: r for r in recs}
        pairs = [
            Pair(
                a=by_id[p.a].path,
                b=by_id[p.b].path,
                tier=p.tier,
                hamming=p.hamming,
                cosine=round(p.cosine, 4),
                inliers=p.inliers,
                view=describe(p.view),
                overlap=p.overlap,
                changed=p.changed,
            )
            for p in stored_pairs
        ]
        members = [_member(r) for r in sorted(recs, key=lambda r: r.path)]
        d = choose(recs, policy, chosen)
        report.groups.append(
            Group(
                gid,
                members,
                pairs,
                tier=str(Tier.SIMILAR if similar else Tier.COPY),
                label="similar shots" if similar else "copies",
                copies=inside,
                bytes=sum(m.size for m in members),
                keeper=d.keeper.path,
                keeper_reason=d.reason,
                reclaimable=sum(r.size for r in d.remove),
                protected=[p.path for p in d.protected],
            )
        )
    report.groups.sort(key=lambda g: (-g.reclaimable, g.id))
    report.errors = [BadFile(r.path, r.error or "unknown error") for r in store.read.errors()]
    report.roots = store.decisions.roots()
    return report


def to_json(report: Report) -> dict[str, Any]:
    return {
        "tier": report.tier,
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


def display_path(path: str, roots: Sequence[str]) -> str:
    """A path as the table shows it: relative to the scanned folder holding it (prefixed with that folder's name
    when there are several); unchanged when it lies under none."""
    root = max((r for r in roots if is_under(path, r)), key=len, default=None)
    if root is None:
        return path
    rel = os.path.relpath(path, root)
    return rel if len(roots) == 1 else f"{os.path.basename(root.rstrip('/')) or root}/{rel}"


def _similarity(g: Group) -> dict[str, float]:
    """Per member: the highest cosine of its pairs within the group."""
    best: dict[str, float] = {}
    for p in g.pairs:
        for path in (p.a, p.b):
            best[path] = max(best.get(path, 0.0), p.cosine)
    return best


def _role(g: Group, path: str) -> str:
    return "keep" if path == g.keeper else ("ref" if path in g.protected else "")


_SIMILARITY_NOTE = "match: a file's closest CNN similarity within its group (1.000: the same picture)"
_OTHER_COLUMNS = 34  # what the role, size, pixels and match columns and the padding take on a line


def wrap_path(path: str, width: int) -> str:
    """Break a path into lines of at most `width` characters at its '/'s, so that a terminal that is too narrow
    for it shows folder and file names whole (a name longer than a line is still folded)."""
    if len(path) <= width or width < 8:
        return path
    lines: list[str] = []
    line = ""
    for part in path.split("/"):
        piece = part if not line else "/" + part
        if line and len(line) + len(piece) > width:
            lines.append(line + "/")
            line = part
        else:
            line += piece
    lines.append(line)
    return "\n".join(lines)


def write_table(report: Report, console: Console) -> None:
    """For a terminal: one table per group, fitted to its width, paths relative to the scanned folders."""
    s = summary(report)
    where = f"; paths under {report.roots[0]}" if len(report.roots) == 1 else ""
    console.print(
        Text(f"{s['groups']} {report.noun}, {s['files']} files, {_size(s['reclaimable_bytes'])} reclaimable{where}")
    )
    if report.groups:
        console.print(Text(_SIMILARITY_NOTE, style="dim"))
    path_width = max(20, console.width - _OTHER_COLUMNS)
    for g in report.groups:
        best = _similarity(g)
        t = Table(
            title=(
                f"{'similar shots' if g.tier == Tier.SIMILAR else 'group'} {g.id}: {len(g.members)} files, "
                f"{_size(g.reclaimable)} reclaimable; keep: {g.keeper_reason}"
            ),
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        t.add_column("", no_wrap=True)
        t.add_column("path", overflow="fold")
        t.add_column("size", justify="right", no_wrap=True)
        t.add_column("pixels", justify="right", no_wrap=True)
        t.add_column("match", justify="right", no_wrap=True)
        for m in g.members:
            px = f"{m.width}x{m.height}" if m.width else "?"
            sim = f"{best.get(m.path, 0):.3f}"
            shown = wrap_path(display_path(m.path, report.roots), path_width)
            t.add_row(_role(g, m.path), Text(shown), _size(m.size), px, sim)
        console.print(t)
    if report.errors:
        t = Table(title=f"{len(report.errors)} files could not be read", title_justify="left", box=box.SIMPLE_HEAD)
        t.add_column("path", overflow="fold", ratio=1)
        t.add_column("reason", ratio=1)
        for e in report.errors:
            t.add_row(Text(wrap_path(display_path(e.path, report.roots), console.width // 2 - 3)), Text(e.error))
        console.print(t)


PLAIN_COLUMNS = ("group", "role", "bytes", "pixels", "match", "path", "note")


def _field(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def write_plain(report: Report, out: IO[str]) -> None:
    """For a pipe or a file: tab-separated rows under one header, no box drawing, no padding, comments first. One
    row per group member (role keep, ref or empty) and one per unreadable file (role error, the reason as note);
    paths relative to the scanned folders named in the comments (the JSON and CSV reports carry full paths)."""
    s = summary(report)
    out.write(
        f"# {s['groups']} {report.noun}, {s['files']} files, {s['reclaimable_bytes']} bytes reclaimable, "
        f"{s['errors']} unreadable\n"
    )
    for root in report.roots:
        out.write(f"# root: {root}\n")
    out.write(f"# {_SIMILARITY_NOTE}\n")
    out.write("\t".join(PLAIN_COLUMNS) + "\n")
    for g in report.groups:
        best = _similarity(g)
        for m in g.members:
            px = f"{m.width}x{m.height}" if m.width else ""
            row = [
                g.id,
                _role(g, m.path),
                m.size,
                px,
                f"{best.get(m.path, 0):.3f}",
                display_path(m.path, report.roots),
                "",
            ]
            out.write("\t".join(_field(v) for v in row) + "\n")
    for e in report.errors:
        row = ["", "error", "", "", "", display_path(e.path, report.roots), e.error]
        out.write("\t".join(_field(v) for v in row) + "\n")
