"""What crosses module boundaries about a file and a pair: the records the store keeps and everyone else reads.

The field list lives here once. The store maps it to columns generically, the pipeline fills it from a
fingerprint generically, and reports copy the fields they show by name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np

from dupwatch.hashing.fingerprint import FileResult, Fingerprint


class FileStatus(StrEnum):
    OK = "ok"  # live: fingerprinted, indexed, grouped
    ERROR = "error"  # unreadable now; the reason is kept
    DELETED = "deleted"  # gone from disk; the row stays so that a rename can find its fingerprints
    RESOLVED = "resolved"  # moved to the quarantine or the trash, or replaced by a link, by `dupwatch resolve`


class Tier(StrEnum):
    """How two files relate; the order is from the closest to the loosest."""

    EXACT = "exact"  # the same bytes, or the same decoded pixels
    COPY = "copy"  # the same capture, edited: agrees in its details once aligned (hashing.detail)
    SIMILAR = "similar"  # the same scene, another capture: a burst frame, a stereo pair, an overlapping crop


DUPLICATE_TIERS: tuple[Tier, ...] = (Tier.EXACT, Tier.COPY)  # what duplicate groups (and `resolve`) are made of


@dataclass(kw_only=True)
class FileRow:
    """Everything stored about a file except its identity: what a new file is before it has a row."""

    path: str
    size: int
    mtime_ns: int
    status: FileStatus
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    ahash: int | None = None  # unsigned 64-bit (the store keeps it signed)
    chash: int | None = None
    sharpness: float | None = None
    exposure: float | None = None  # hashing.fingerprint.exposure_score
    taken_at: str | None = None
    exif_fields: int | None = None
    embedding: np.ndarray | None = None  # float16 unit vector
    error: str | None = None
    notes: str | None = None
    pixel_hash: str | None = None  # what was odd about the file but did not stop it being read

    @classmethod
    def from_result(cls, result: FileResult, embedding: np.ndarray | None = None) -> FileRow:
        """A fingerprinted file (its facts copied by name from the fingerprint), or an unreadable one."""
        fp = result.fingerprint
        if fp is None:
            return cls(
                path=result.path,
                size=result.size,
                mtime_ns=result.mtime_ns,
                status=FileStatus.ERROR,
                error=result.error,
            )
        facts = {name: getattr(fp, name) for name in _FINGERPRINT_FIELDS}
        emb = None if embedding is None else embedding.astype(np.float16)
        notes = "; ".join(fp.notes) or None
        return cls(
            path=result.path,
            size=result.size,
            mtime_ns=result.mtime_ns,
            status=FileStatus.OK,
            embedding=emb,
            notes=notes,
            **facts,
        )


@dataclass(kw_only=True)
class FileRecord(FileRow):
    """A file as the store holds it: with its row id (also its label in the indexes) and the generation of its
    last change."""

    id: int
    gen: int = 0


@dataclass
class PairRecord:
    a: int
    b: int
    tier: Tier
    hamming: int
    cosine: float
    view: int = 0  # dihedral view (hashing.views) under which the geometry confirmed the pair; 0 = as is
    inliers: int | None = None  # geometric verification's agreeing local matches (hashing.geometry)
    overlap: float | None = None  # the smaller share of either image that the other covers (hashing.detail)
    changed: float | None = None  # share of detail blocks that disagree once aligned (hashing.detail)
    scattered: float | None = None  # ... outside the two largest regions of disagreement (an overlay is compact)


FILE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FileRow))
# The image facts a fingerprint carries under the same names (content hash, size in pixels, hashes, EXIF ...).
_FINGERPRINT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Fingerprint) if f.name in FILE_FIELDS and f.name not in ("size", "mtime_ns", "notes")
)
