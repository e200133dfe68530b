"""Which file of a group to keep: the rule a photographer would apply, as an ordered list of criteria.

Default order: highest resolution, then the preferred format (raw, heic, png, jpeg: a lossless screenshot over its
JPEG re-encode), then sharpness (variance of the Laplacian, measured on the same 224x224 image for every format:
picks the crisp frame of a burst), then the richest EXIF (camera tags only, never a TIFF's layout tags), then the
largest file, then the oldest. `folder` prefers files under the folders named first (e.g. DCIM over WhatsApp).
Resolution and file size decide only when they differ by more than `min_difference` (a one-row crop or a
re-encode a few bytes larger is no reason). Files under a reference folder are never proposed for removal, and one
of them is the keeper when the group has any.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from dupwatch.daemon.files import is_under
from dupwatch.daemon.records import FileRecord

if TYPE_CHECKING:
    from dupwatch.daemon.config import Config


class KeeperRule(StrEnum):
    RESOLUTION = "resolution"
    FORMAT = "format"
    SHARPNESS = "sharpness"
    EXPOSURE = "exposure"
    EXIF = "exif"
    SIZE = "size"
    FOLDER = "folder"
    OLDEST = "oldest"
    NEWEST = "newest"


DEFAULT_RULES: tuple[KeeperRule, ...] = (
    KeeperRule.RESOLUTION,
    KeeperRule.FORMAT,
    KeeperRule.SHARPNESS,
    KeeperRule.EXIF,
    KeeperRule.SIZE,
    KeeperRule.OLDEST,
)
DEFAULT_FORMATS: tuple[str, ...] = ("raw", "heic", "png", "jpeg")  # earlier is better; unnamed formats come last

# Pillow's format names -> the names users give in keeper_formats
_FORMAT_NAMES = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "HEIF": "heic",
    "AVIF": "avif",
    "PNG": "png",
    "WEBP": "webp",
    "TIFF": "tiff",
    "GIF": "gif",
    "BMP": "bmp",
    "RAW": "raw",
    "DNG": "raw",
}

_SHARPNESS_TOLERANCE = 0.10  # re-encodes differ by a few percent: only a clear difference in sharpness decides


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


@dataclass(frozen=True)
class KeeperPolicy:
    """Everything that decides a keeper: the criteria in order and what some of them prefer."""

    rules: tuple[KeeperRule, ...] = DEFAULT_RULES
    reference_dirs: tuple[str, ...] = ()
    formats: tuple[str, ...] = DEFAULT_FORMATS
    folders: tuple[str, ...] = ()  # folder names or path fragments, most preferred first
    min_difference: float = 0.05  # resolution or size closer than this (relative) do not decide

    @classmethod
    def from_config(cls, cfg: Config) -> KeeperPolicy:
        return cls(
            rules=parse_rules(cfg.keeper_rules),
            reference_dirs=tuple(str(d) for d in cfg.reference_dirs),
            formats=tuple(f.lower() for f in cfg.keeper_formats),
            folders=cfg.keeper_folders,
            min_difference=cfg.keeper_min_difference,
        )

    def best_shot(self) -> KeeperPolicy:
        """For similar-shot groups (bursts, other takes): the takes are different pictures, so the best picture
        wins: the sharpest, then (sharpness within 10 %) the best exposed, then the largest; the configured format
        and folder preferences only break ties."""
        first = (KeeperRule.SHARPNESS, KeeperRule.EXPOSURE, KeeperRule.RESOLUTION)
        return dataclasses.replace(self, rules=first + tuple(r for r in self.rules if r not in first))


def capture_time(r: FileRecord) -> float:
    """When the photo was taken: its EXIF capture time, else its file time (seconds since the epoch)."""
    if r.taken_at:
        try:
            return datetime.fromisoformat(r.taken_at).timestamp()
        except ValueError:
            pass
    return r.mtime_ns / 1e9


def _rank(position: int | None, count: int) -> float:
    """Earlier in a preference list is better; not in it at all is worst."""
    return -float(count if position is None else position)


def _format_rank(r: FileRecord, p: KeeperPolicy) -> float:
    name = _FORMAT_NAMES.get((r.format or "").upper(), (r.format or "").lower())
    return _rank(p.formats.index(name) if name in p.formats else None, len(p.formats))


def _folder_rank(r: FileRecord, p: KeeperPolicy) -> float:
    parts = [s.lower() for s in r.path.split(os.sep)]
    folder = r.path.lower()
    for n, want in enumerate(p.folders):
        w = want.lower().strip("/")
        if w in parts or ("/" in w and f"/{w}/" in folder):
            return _rank(n, len(p.folders))
    return _rank(None, len(p.folders))


# Each criterion maps a file to a number where larger is better.
CRITERIA: dict[KeeperRule, Callable[[FileRecord, KeeperPolicy], float]] = {
    KeeperRule.RESOLUTION: lambda r, p: float((r.width or 0) * (r.height or 0)),
    KeeperRule.FORMAT: _format_rank,
    KeeperRule.SHARPNESS: lambda r, p: float(r.sharpness or 0.0),
    KeeperRule.EXPOSURE: lambda r, p: float(r.exposure if r.exposure is not None else 0.0),
    KeeperRule.EXIF: lambda r, p: float(r.exif_fields or 0),
    KeeperRule.SIZE: lambda r, p: float(r.size or 0),
    KeeperRule.FOLDER: _folder_rank,
    KeeperRule.OLDEST: lambda r, p: -float(capture_time(r)),
    KeeperRule.NEWEST: lambda r, p: float(capture_time(r)),
}


@dataclass
class Decision:
    keeper: FileRecord
    remove: list[FileRecord]  # proposed for removal
    protected: list[FileRecord]  # kept because they sit in a reference folder
    reason: str


def _better(a: FileRecord, b: FileRecord, policy: KeeperPolicy) -> tuple[bool, str]:
    """Is a better than b, and by which criterion."""
    for rule in policy.rules:
        va, vb = CRITERIA[rule](a, policy), CRITERIA[rule](b, policy)
        tolerance = {
            KeeperRule.SHARPNESS: _SHARPNESS_TOLERANCE,
            KeeperRule.EXPOSURE: policy.min_difference,
            KeeperRule.RESOLUTION: policy.min_difference,
            KeeperRule.SIZE: policy.min_difference,
        }.get(rule)
        if tolerance is not None and abs(va - vb) <= tolerance * max(va, vb, 1e-9):
            continue
        if va != vb:
            return va > vb, str(rule)
    return a.path < b.path, "path"  # deterministic last resort


def choose(
    members: Sequence[FileRecord], policy: KeeperPolicy | None = None, chosen: Mapping[str, float] | None = None
) -> Decision:
    """The keeper of a group: the member whose content the user chose (`chosen`: content hash -> when; the latest
    wins), else the best by the policy's criteria. Reference-folder files are never removed."""
    policy = policy or KeeperPolicy()
    protected = [m for m in members if any(is_under(m.path, d) for d in policy.reference_dirs)]
    picked = [m for m in members if chosen and m.content_hash in chosen]
    if picked:
        assert chosen is not None
        latest = max(chosen[m.content_hash or ""] for m in picked)
        picked = [m for m in picked if chosen[m.content_hash or ""] == latest]  # copies of one content: by rules
        best = picked[0]
        for m in picked[1:]:
            if _better(m, best, policy)[0]:
                best = m
        remove = [m for m in members if m is not best and m not in protected]
        return Decision(best, remove, [p for p in protected if p is not best], "chosen by you")
    pool = protected or list(members)
    best = pool[0]
    for m in pool[1:]:
        if _better(m, best, policy)[0]:
            best = m
    reasons = {_better(best, m, policy)[1] for m in members if m is not best and m not in protected}
    reason = "only candidate"
    if protected:
        reason = "in a reference folder"
    elif reasons:
        ordered = [r for r in policy.rules if r in reasons]
        reason = "best by " + ", ".join(ordered) if reasons - {"path"} else "first by path"
    remove = [m for m in members if m is not best and m not in protected]
    return Decision(best, remove, [p for p in protected if p is not best], reason)
