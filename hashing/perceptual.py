"""Perceptual hashes packed into Python ints, plus the signed form SQLite can store.

imagehash gives numpy bool arrays; we keep plain ints because they compare with one popcount and store in one
SQLite column. ImageHash objects are never used as keys (their __hash__ keeps only 8 bits).
"""

from __future__ import annotations

import cv2
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


# imagehash.colorhash's bins: black (intensity below 32), grey (saturation below 85), then six hue bins each of
# faint (saturation below 170) and bright colours (above 170; exactly 170 is a colour in neither)
_BLACK = 256 // 8
_GREY = 256 // 3
_FAINT = 256 * 2 // 3
_HUE_BIN = np.minimum(np.searchsorted(np.linspace(0, 255, 7), np.arange(256), side="right") - 1, 5)  # np.histogram's


def colour_hash(image: Image.Image) -> int:
    """imagehash.colorhash(image, binbits=3) bit for bit, in ~60 % of its time (2.0 against 3.3 ms on a 448 px
    photo): one histogram over (saturation, hue) of the pixels that are not black, summed into the bins, instead
    of a mask, a copy and a sort for each kind of bin."""
    hsv = np.asarray(image.convert("HSV"))
    lit = np.asarray(image.convert("L")) >= _BLACK
    cells = cv2.calcHist([hsv], [1, 0], lit.view(np.uint8), [256, 256], [0, 256, 0, 256]).astype(np.float64)
    n = lit.size
    black = n - int(np.count_nonzero(lit))
    grey = int(cells[:_GREY].sum())
    colours = max(1, n - black - grey)
    faint = np.bincount(_HUE_BIN, weights=cells[_GREY:_FAINT].sum(axis=0), minlength=6)
    bright = np.bincount(_HUE_BIN, weights=cells[_FAINT + 1 :].sum(axis=0), minlength=6)
    levels = 2**COLOR_BINBITS
    values = [min(levels - 1, int(black / n * levels)), min(levels - 1, int(grey / n * levels))]
    values += [min(levels - 1, int(float(count) * levels / colours)) for count in (*faint, *bright)]
    out = 0
    for v in values:  # imagehash's digits of each value (v >= 4, v >= 2, v odd), most significant first
        for i in range(COLOR_BINBITS):
            out = (out << 1) | int(v // 2 ** (COLOR_BINBITS - i - 1) % 2 ** (COLOR_BINBITS - i) > 0)
    return out


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_signed64(value: int) -> int:
    """Unsigned 64-bit -> SQLite's signed INTEGER (values >= 2^63 would raise OverflowError)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def from_signed64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value
