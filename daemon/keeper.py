"""Which file of a group to keep: the rule a photographer would apply, as an ordered list of criteria.

Default order: highest resolution, then sharpness (variance of the Laplacian: picks the crisp frame of a burst
over its blurred neighbours), then the richest EXIF, then the largest file, then the oldest. Files under a
reference folder are never proposed for removal, and one of them is the keeper when the group has any.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from dupwatch.daemon.files import is_under
from dupwatch.daemon.records import FileRecord


class KeeperRule(StrEnum):
    RESOLUTION = "resolution"
    SHARPNESS = "sharpness"
    EXIF = "exif"
    SIZE = "size"
    OLDEST = "oldest"
    NEWEST = "newest"


DEFAULT_RULES: tuple[KeeperRule, ...] = (
    KeeperRule.RESOLUTION,
    KeeperRule.SHARPNESS,
    KeeperRule.EXIF,
    KeeperRule.SIZE,
    KeeperRule.OLDEST,
)

# Each criterion maps a file to a number where larger is better.
CRITERIA: dict[KeeperRule, Callable[[FileRecord], float]] = {
    KeeperRule.RESOLUTION: lambda r: float((r.width or 0) * (r.height or 0)),
    KeeperRule.SHARPNESS: lambda r: float(r.sharpness or 0.0),
    KeeperRule.EXIF: lambda r: float(r.exif_fields or 0),
    KeeperRule.SIZE: lambda r: float(r.size or 0),
    KeeperRule.OLDEST: lambda r: -float(_timestamp(r)),
    KeeperRule.NEWEST: lambda r: float(_timestamp(r)),
}

_SHARPNESS_TOLERANCE = 0.10  # re-encodes differ by a few percent: only a clear difference in sharpness decides


def _timestamp(r: FileRecord) -> float:
    if r.taken_at:
        try:
            return datetime.fromisoformat(r.taken_at).timestamp()
        except ValueError:
            pass
    return r.mtime_ns / 1e9


class RuleError(ValueError):
    pass


def parse_rules(rules: Sequence[str] | str) -> tuple[KeeperRule, ...]:
    """'resolution,sharpness' or a list of names -> the rules, in order; unknown names are an error."""
    if isinstance(rules, str):
        rules = [x.strip() for x in rules.split(",") if x.strip()]
    known = {str(k) for k in KeeperRule}
    unknown = [x for x in rules if x not in known]
    if unknown:
        raise RuleError(f"unknown keeper criteria {unknown}; choose from {', '.join(known)}")
    return tuple(KeeperRule(x) for x in rules)


@dataclass
class Decision:
    keeper: FileRecord
    remove: list[FileRecord]  # proposed for removal
    protected: list[FileRecord]  # kept because they sit in a reference folder
    reason: str


def _better(a: FileRecord, b: FileRecord, rules: Sequence[KeeperRule]) -> tuple[bool, str]:
    """Is a better than b, and by which criterion."""
    for rule in rules:
        va, vb = CRITERIA[rule](a), CRITERIA[rule](b)
        if rule == KeeperRule.SHARPNESS and abs(va - vb) <= _SHARPNESS_TOLERANCE * max(va, vb, 1e-9):
            continue
        if va != vb:
            return va > vb, str(rule)
    return a.path < b.path, "path"  # deterministic last resort


def choose(
    members: Sequence[FileRecord], rules: Sequence[str] = DEFAULT_RULES, reference_dirs: Sequence[str] = ()
) -> Decision:
    """The keeper of a group by `rules` (names of KeeperRule, in order); reference-folder files are never removed."""
    ordered = parse_rules(rules)
    protected = [m for m in members if any(is_under(m.path, d) for d in reference_dirs)]
    pool = protected or list(members)
    best = pool[0]
    for m in pool[1:]:
        if _better(m, best, ordered)[0]:
            best = m
    reasons = {_better(best, m, ordered)[1] for m in members if m is not best and m not in protected}
    reason = "only candidate"
    if protected:
        reason = "in a reference folder"
    elif reasons:
        reason = "best by " + ", ".join(r for r in ordered if r in reasons) if reasons - {"path"} else "first by path"
    remove = [m for m in members if m is not best and m not in protected]
    return Decision(best, remove, [p for p in protected if p is not best], reason)
