"""Perceptual hashes packed into Python ints, plus the signed form SQLite can store.

imagehash gives numpy bool arrays; we keep plain ints because they compare with one popcount and store in one
SQLite column. ImageHash objects are never used as keys (their __hash__ keeps only 8 bits).
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

from dupwatch.hashing.views import ALL_VIEWS, dihedral

AHASH_BITS = 64
COLOR_BINBITS = 3  # imagehash.colorhash: 14 bins x 3 bits = 42 bits


def bits_to_int(bits: np.ndarray) -> int:
    out = 0
    for b in np.asarray(bits, dtype=bool).ravel():
        out = (out << 1) | int(b)
    return out


def average_hash_bits(image: Image.Image) -> np.ndarray:
    """The 8x8 bit matrix of imagehash's average hash (kept as a matrix so its views can be taken)."""
    return imagehash.average_hash(image, hash_size=8).hash


def average_hash(image: Image.Image) -> int:
    return bits_to_int(average_hash_bits(image))


def average_hash_views(image: Image.Image) -> tuple[int, ...]:
    """Average hash of each dihedral view; resizing commutes with rotation/mirroring, so no re-decode is needed."""
    bits = average_hash_bits(image)
    return tuple(bits_to_int(dihedral(bits, v)) for v in ALL_VIEWS)


def colour_hash(image: Image.Image) -> int:
    return bits_to_int(imagehash.colorhash(image, binbits=COLOR_BINBITS).hash)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_signed64(value: int) -> int:
    """Unsigned 64-bit -> SQLite's signed INTEGER (values >= 2^63 would raise OverflowError)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def from_signed64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value
