"""One file -> one Fingerprint: everything dupwatch knows about an image, computed from a single read and decode.

This is what worker processes run. The bytes are read once, so the content hash and the pixels always describe
the same version of a file that may be changing under us.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dupwatch.hashing.decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, decode
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.perceptual import average_hash_views, colour_hash
from dupwatch.hashing.sizes import INPUT_SIZE

DEFAULT_MAX_FILE_BYTES = 1 << 30


@dataclass
class Fingerprint:
    content_hash: str
    size: int
    mtime_ns: int
    width: int
    height: int
    format: str
    ahash: int  # average hash of the upright image (view 0)
    ahash_views: tuple[int, ...]  # average hash of all eight dihedral views
    chash: int
    sharpness: float  # variance of the Laplacian: picks the crisp frame of a burst
    taken_at: str | None
    exif_fields: int
    pixels: np.ndarray  # INPUT_SIZE x INPUT_SIZE x 3 uint8, the CNN's input


@dataclass
class FileResult:
    """What a worker sends back for one path: a fingerprint, or the reason there is none."""

    path: str
    fingerprint: Fingerprint | None = None
    error: str | None = None
    size: int = 0
    mtime_ns: int = 0


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def laplacian_variance(gray: np.ndarray) -> float:
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0


def fingerprint_bytes(
    data: bytes, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Fingerprint:
    d = decode(data, max_side=max_side, max_pixels=max_pixels)
    pixels = np.asarray(d.image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
    views = average_hash_views(d.image)
    return Fingerprint(
        content_hash=content_hash(data),
        size=len(data),
        mtime_ns=0,
        width=d.width,
        height=d.height,
        format=d.format,
        ahash=views[0],
        ahash_views=views,
        chash=colour_hash(d.image),
        sharpness=laplacian_variance(np.asarray(d.image.convert("L"))),
        taken_at=d.taken_at,
        exif_fields=d.exif_fields,
        pixels=pixels,
    )


def read_file(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[bytes, os.stat_result]:
    """Read a whole file; unreadable, vanished and oversized files become DecodeErrors."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > max_bytes:
                raise DecodeError(f"file too large ({st.st_size:,} bytes, limit {max_bytes:,})")
            data = f.read()
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except IsADirectoryError:
        raise DecodeError("is a directory") from None
    except OSError as e:
        raise DecodeError(f"unreadable: {e.strerror or e}") from None
    return data, st


def fingerprint_file(
    path: str | Path,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> FileResult:
    """Never raises for a bad file: the error is part of the result, so a batch always finishes."""
    path = str(path)
    try:
        data, st = read_file(path, max_bytes)
    except DecodeError as e:
        return FileResult(path, error=e.reason)
    try:
        fp = fingerprint_bytes(data, max_side=max_side, max_pixels=max_pixels)
    except DecodeError as e:
        return FileResult(path, error=e.reason, size=st.st_size, mtime_ns=st.st_mtime_ns)
    fp.mtime_ns = st.st_mtime_ns
    return FileResult(path, fingerprint=fp, size=st.st_size, mtime_ns=st.st_mtime_ns)
