"""One file -> one Fingerprint: everything dupwatch knows about an image, computed from a single read and decode.

This is what worker processes run. The bytes are read once, so the content hash and the pixels always describe
the same version of a file that may be changing under us.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dupwatch.hashing.decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Decoded, decode
from dupwatch.hashing.detail import detail_image, texture
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.perceptual import average_hash_views, colour_hash
from dupwatch.hashing.raw import decode_raw, is_raw
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
    exposure: float  # 1 for a well-exposed picture, less the more of it is clipped or the further from mid-grey
    taken_at: str | None
    exif_fields: int
    pixels: np.ndarray  # INPUT_SIZE x INPUT_SIZE x 3 uint8, the CNN's input
    detail: np.ndarray  # DETAIL_SIZE square greyscale uint8 (hashing.detail): copies agree in it, look-alikes do not
    pixel_hash: str  # of the decoded, upright pixels: the same picture saved losslessly in another format
    texture: float  # share of detail blocks with any detail (hashing.detail.texture): 0 for a flat picture
    notes: tuple[str, ...] = ()  # oddities that did not stop the decode (hashing.decode.Decoded.notes)


@dataclass
class FileResult:
    """What a worker sends back for one path: a fingerprint, or the reason there is none."""

    path: str
    fingerprint: Fingerprint | None = None
    error: str | None = None
    size: int = 0
    mtime_ns: int = 0
    final: bool = False  # the error cannot go away by waiting (see DecodeError.final)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def pixel_hash(image: Image.Image, width: int, height: int) -> str:
    """The decoded pixels (at the decoding scale) and the full size: equal for a PNG and a BMP of one bitmap."""
    h = hashlib.blake2b(f"{width}x{height}:{image.mode}:{image.size}".encode(), digest_size=16)
    h.update(image.tobytes())
    return h.hexdigest()


def exposure_score(gray: np.ndarray) -> float:
    """How well exposed: 1 minus the share of clipped pixels (crushed blacks, blown highlights) minus half the
    distance of the mean from mid-grey. Between two frames of a burst, the one to keep has the higher score."""
    g = gray.astype(np.float32)
    clipped = float(((g <= 3) | (g >= 252)).mean())
    return round(1.0 - clipped - 0.5 * abs(float(g.mean()) - 118.0) / 255.0, 4)


def laplacian_variance(gray: np.ndarray) -> float:
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0


def fingerprint_bytes(
    data: bytes, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS, raw: bool = False
) -> Fingerprint:
    """Fingerprint an image's bytes; `raw` for a camera RAW file (hashing.raw), which Pillow would misread."""
    if raw:
        small, w, h, notes = decode_raw(data, max_side, max_pixels)
        d = Decoded(small, w, h, "RAW", 1, None, 0, tuple(notes))
    else:
        d = decode(data, max_side=max_side, max_pixels=max_pixels)
    pixels = np.asarray(d.image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
    views = average_hash_views(d.image)
    detail = detail_image(d.image)
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
        # on the CNN's 224x224 input: one size and one last resampling for every format, so that a TIFF and its
        # JPEG (decoded at reduced scale) compare fairly
        sharpness=laplacian_variance(gray := np.asarray(Image.fromarray(pixels).convert("L"))),
        exposure=exposure_score(gray),
        taken_at=d.taken_at,
        exif_fields=d.exif_fields,
        pixels=pixels,
        detail=detail,
        texture=texture(detail),
        pixel_hash=pixel_hash(d.image, d.width, d.height),
        notes=d.notes,
    )


_FILE_TYPES = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}
READ_DEADLINE_S = 60.0  # a read that takes longer (a hung network mount) is given up
_CHUNK = 1 << 20


def read_file(
    path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES, deadline_s: float = READ_DEADLINE_S
) -> tuple[bytes, os.stat_result]:
    """Read a whole regular file; anything else (symlinks, FIFOs, devices, sockets, folders), unreadable, vanished,
    oversized and too-slow files become DecodeErrors. Opened with O_NOFOLLOW and O_NONBLOCK, so neither a symlink
    to /dev/zero nor a FIFO named like a photo can make a worker read forever or block."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read") from None
    except PermissionError:
        raise DecodeError("permission denied", final=True) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DecodeError("a symbolic link (links are not followed)", final=True) from None
        raise DecodeError(f"unreadable: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _FILE_TYPES.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise DecodeError(f"not a regular file: {kind}", final=True)
        if st.st_size > max_bytes:
            raise DecodeError(f"file too large ({st.st_size:,} bytes, limit {max_bytes:,})")
        chunks: list[bytes] = []
        total = 0
        give_up = time.monotonic() + deadline_s
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise DecodeError(f"file too large (over {max_bytes:,} bytes, still growing)")
            if time.monotonic() > give_up:
                raise DecodeError(f"reading took over {deadline_s:.0f} s (a hung or very slow filesystem?)")
    except OSError as e:
        raise DecodeError(f"unreadable: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


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
        return FileResult(path, error=e.reason, final=e.final)
    try:
        fp = fingerprint_bytes(data, max_side=max_side, max_pixels=max_pixels, raw=is_raw(path))
    except DecodeError as e:
        return FileResult(path, error=e.reason, size=st.st_size, mtime_ns=st.st_mtime_ns)
    except MemoryError:
        return FileResult(path, error="image too large to decode in memory", size=st.st_size, mtime_ns=st.st_mtime_ns)
    fp.mtime_ns = st.st_mtime_ns
    return FileResult(path, fingerprint=fp, size=st.st_size, mtime_ns=st.st_mtime_ns)
