"""Thumbnails: one loader for every page (the report, the cluster page, `dupwatch serve`) and a cache on disk beside
the database, keyed by content hash, so that a photo is shrunk once whatever its name and however often it is shown.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.fingerprint import read_file

log = logging.getLogger(__name__)

THUMB_SIDE = 200
_QUALITY = 80


def thumbnail_image(path: str, side: int = THUMB_SIDE) -> Image.Image | None:
    """A small upright RGB image of the file, read as every reader does (regular files only, no symlink followed);
    None when it cannot be read now."""
    try:
        data, _ = read_file(path, max_bytes=1 << 30)
        opened = Image.open(io.BytesIO(data))
        if opened.format == "JPEG":
            opened.draft("RGB", (side, side))
        im = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
        im.thumbnail((side, side))
    except (DecodeError, OSError, ValueError, Image.DecompressionBombError) as e:
        log.warning("no thumbnail for %s: %s", path, e)
        return None
    return im


def jpeg_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=_QUALITY)
    return buf.getvalue()


def thumbnail_jpeg(path: str, side: int = THUMB_SIDE) -> bytes | None:
    """`thumbnail_image` as JPEG bytes; None when the file cannot be read now."""
    im = thumbnail_image(path, side)
    return None if im is None else jpeg_bytes(im)


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


class ThumbnailCache:
    """JPEG thumbnails in `folder`, one file per content hash and size (`ab/abcdef...-200.jpg`). A file without a
    content hash (never read) is shrunk every time and not kept."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, content_hash: str, side: int) -> Path:
        safe = "".join(c for c in content_hash if c.isalnum())[:128] or "x"
        return self.folder / safe[:2] / f"{safe}-{side}.jpg"

    def get(self, path: str, content_hash: str | None, side: int = THUMB_SIDE) -> bytes | None:
        """The thumbnail's JPEG bytes, from the cache or made now (and kept); None when the file cannot be read."""
        cached = self.path_for(content_hash, side) if content_hash else None
        if cached is not None:
            try:
                return cached.read_bytes()
            except OSError:
                pass
        data = thumbnail_jpeg(path, side)
        if data is not None and cached is not None:
            self._keep(cached, data)
        return data

    @staticmethod
    def _keep(target: Path, data: bytes) -> None:
        """Write beside and rename: a reader never sees half a thumbnail; a cache that cannot be written is only
        slower."""
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as e:
            log.warning("thumbnail cache %s not written: %s", target, e)
            if tmp is not None:  # our own temporary file in the cache folder (a full disk): not left behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
