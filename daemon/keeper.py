"""Which file of a group to keep: the rule a photographer would apply, as an ordered list of criteria.

Default order: highest resolution, then sharpness (variance of the Laplacian: picks the crisp frame of a burst
over its blurred neighbours), then the richest EXIF, then the largest file, then the oldest. Files under a
reference folder are never proposed for removal, and one of them is the keeper when the group has any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from daemon.files import is_under
from daemon.store import FileRecord

DEFAULT_RULES: tuple[str, ...] = ("resolution", "sharpness", "exif", "size", "oldest")

# Each criterion maps a file to a number where larger is better.
CRITERIA: dict[str, Callable[[FileRecord], float]] = {
    "resolution": lambda r: float((r.width or 0) * (r.height or 0)),
    "sharpness": lambda r: float(r.sharpness or 0.0),
    "exif": lambda r: float(r.exif_fields or 0),
    "size": lambda r: float(r.size or 0),
    "oldest": lambda r: -float(_timestamp(r)),
    "newest": lambda r: float(_timestamp(r)),
}

_SHARPNESS_TOLERANCE = 0.10  # re-encodes differ by a few percent: only a clear difference in sharpness decides


def _timestamp(r: FileRecord) -> float:
    if r.taken_at:
        from datetime import datetime

        try:
            return datetime.fromisoformat(r.taken_at).timestamp()
        except ValueError:
            pass
    return r.mtime_ns / 1e9


class RuleError(ValueError):
    pass


def parse_rules(rules: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(rules, str):
        rules = [x.strip() for x in rules.split(",") if x.strip()]
    unknown = [x for x in rules if x not in CRITERIA]
    if unknown:
        raise RuleError(f"unknown keeper criteria {unknown}; choose from {', '.join(CRITERIA)}")
    return tuple(rules)


@dataclass
class Decision:
    keeper: FileRecord
    remove: list[FileRecord]  # proposed for removal
    protected: list[FileRecord]  # kept because they sit in a reference folder
    reason: str


def _better(a: FileRecord, b: FileRecord, rules: Sequence[str]) -> tuple[bool, str]:
    """Is a better than b, and by which criterion."""
    for rule in rules:
        va, vb = CRITERIA[rule](a), CRITERIA[rule](b)
        if rule == "sharpness":
            if abs(va - vb) <= _SHARPNESS_TOLERANCE * max(va, vb, 1e-9):
                continue
        if va != vb:
            return va > vb, rule
    return a.path < b.path, "path"  # deterministic last resort


def choose(members: Sequence[FileRecord], rules: Sequence[str] = DEFAULT_RULES,
           reference_dirs: Sequence[str] = ()) -> Decision:  # fmt: skip
    protected = [m for m in members if any(is_under(m.path, d) for d in reference_dirs)]
    pool = protected or list(members)
    best = pool[0]
    reason = "only candidate"
    for m in pool[1:]:
        wins, why = _better(m, best, rules)
        if wins:
            best = m
    reasons = {_better(best, m, rules)[1] for m in members if m is not best and m not in protected}
    if protected:
        reason = "in a reference folder"
    elif reasons:
        reason = "best by " + ", ".join(r for r in rules if r in reasons) if reasons - {"path"} else "first by path"
    remove = [m for m in members if m is not best and m not in protected]
    return Decision(best, remove, [p for p in protected if p is not best], reason)
