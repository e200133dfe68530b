"""Perceptual hashes packed into Python ints, plus the signed form SQLite can store.

imagehash gives numpy bool arrays; we keep plain ints because they compare with one popcount and store in one
SQLite column. ImageHash objects are never used as keys (their __hash__ keeps only 8 bits).
"""

from __future__ import annotations

import functools

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
    """imagehash.colorhash(image, binbits=3) bit for bit, in ~40 % of its time (1.3 against 3.3 ms on a 448 px
    photo): one histogram over (saturation, hue) of the pixels that are not black, summed into the bins, instead
    of a mask, a copy and a sort for each kind of bin; an RGB image's hue and saturation from `hue_saturation`."""
    if image.mode == "RGB":
        hue, saturation = hue_saturation(np.asarray(image))
    else:
        hsv = np.asarray(image.convert("HSV"))
        hue, saturation = np.ascontiguousarray(hsv[..., 0]), np.ascontiguousarray(hsv[..., 1])
    lit = np.asarray(image.convert("L")) >= _BLACK
    cells = cv2.calcHist([saturation, hue], [0, 1], lit.view(np.uint8), [256, 256], [0, 256, 0, 256])
    cells = cells.astype(np.float64)
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


def hue_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hue and saturation planes of Pillow's RGB -> HSV conversion of an (H, W, 3) uint8 image, to the bit, in
    ~60 % of its time (it computes each pixel in floating point, through `fmod`). Pillow's saturation depends only
    on a pixel's largest channel and its range, its hue only on which channel is the largest (red before green
    before blue on a tie) and how far the other two lie below it: both are read from tables of Pillow's own
    results (`_hsv_tables`)."""
    saturations, hues = _hsv_tables()
    r, g, b = cv2.split(np.ascontiguousarray(rgb))
    top = cv2.max(cv2.max(r, g), b)
    spread = cv2.subtract(top, cv2.min(cv2.min(r, g), b))
    saturation = saturations[(top.astype(np.uint16) << 8) | spread]
    below_r, below_g, below_b = cv2.subtract(top, r), cv2.subtract(top, g), cv2.subtract(top, b)
    red = below_r == 0
    green = ~red & (below_g == 0)
    key = np.where(red, below_g, below_r).astype(np.int32) << 8  # the table's row: the first of the other two
    key |= np.where(red | green, below_b, below_g)  # its column: the second
    key[~red] += 1 << 16  # green's table, then blue's
    key[~(red | green)] += 1 << 16
    hue: np.ndarray = hues[key]
    return hue, saturation


@functools.cache
def _hsv_tables() -> tuple[np.ndarray, np.ndarray]:
    """Pillow's saturation by (largest channel, range) and its hue by (largest channel, the other two channels'
    distances below it), as flat tables: read off Pillow converting pixels that have them (largest 255 for the
    hue, which does not depend on it; ranges wider than the largest channel never occur)."""
    d = np.arange(256, dtype=np.uint8)
    first, second = np.meshgrid(d, d, indexing="ij")
    top = np.full_like(first, 255)

    def hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(np.dstack([r, g, b]), "RGB").convert("HSV"))

    low = (first - np.minimum(second, first)).astype(np.uint8)  # largest channel `first`, range `second`
    saturations = np.ascontiguousarray(hsv(first, low, low)[..., 1]).reshape(-1)
    hues = np.stack(
        [
            hsv(top, top - first, top - second)[..., 0],  # red largest: (below it: green, blue)
            hsv(top - first, top, top - second)[..., 0],  # green largest, red below it: (red, blue)
            hsv(top - first, top - second, top)[..., 0],  # blue largest, both below it: (red, green)
        ]
    ).reshape(-1)
    return saturations, hues


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_signed64(value: int) -> int:
    """Unsigned 64-bit -> SQLite's signed INTEGER (values >= 2^63 would raise OverflowError)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def from_signed64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value
