"""Camera RAW files (DNG, CR2, NEF, ARW, ...) through LibRaw (rawpy): the embedded JPEG preview when it is large
enough for the fingerprints (fast: no demosaicing), else a half-size demosaic. The result is the same small, upright
RGB image every other format gives, so a RAW and the camera's JPEG of the same shot fingerprint alike."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from dupwatch.hashing.errors import DecodeError

if TYPE_CHECKING:
    import rawpy

RAW_SUFFIXES: tuple[str, ...] = (
    ".dng",
    ".cr2",
    ".cr3",
    ".crw",
    ".nef",
    ".nrw",
    ".arw",
    ".srf",
    ".sr2",
    ".orf",
    ".rw2",
    ".raf",
    ".pef",
    ".srw",
    ".erf",
    ".kdc",
    ".dcr",
    ".mos",
    ".mrw",
    ".3fr",
    ".iiq",
    ".rwl",
    ".x3f",
)


def is_raw(path: str) -> bool:
    return path.lower().endswith(RAW_SUFFIXES)


def decode_raw(data: bytes, max_side: int, max_pixels: int) -> tuple[Image.Image, int, int, list[str]]:
    """(small upright RGB image, full width, full height as displayed, notes), or a DecodeError."""
    try:
        import rawpy
    except ImportError:  # pragma: no cover - rawpy is a dependency; a broken install says so
        raise DecodeError("camera RAW needs rawpy (pip install rawpy)", final=True) from None
    notes: list[str] = []
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            w, h = raw.sizes.width, raw.sizes.height
            if raw.sizes.flip in (5, 6):  # LibRaw's flip: shown rotated by 90 degrees
                w, h = h, w
            if w * h > max_pixels:
                raise DecodeError(f"decompression bomb: {w}x{h} pixels is over the {max_pixels:,} pixel limit")
            image = _preview(raw, max_side, notes)
            if image is None:
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
                image = Image.fromarray(rgb).convert("RGB")
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError("image too large to decode in memory") from None
    except Exception as e:  # LibRaw's errors (unsupported, corrupt, truncated) come in many classes
        raise DecodeError(f"not a camera RAW LibRaw can read: {type(e).__name__}: {e}") from None
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image, w, h, notes


def _preview(raw: rawpy.RawPy, max_side: int, notes: list[str]) -> Image.Image | None:
    """The embedded JPEG preview, upright, when it is at least twice the working size; else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format != rawpy.ThumbFormat.JPEG or not isinstance(thumb.data, bytes):
        return None
    try:
        opened = Image.open(io.BytesIO(thumb.data))
        opened.draft("RGB", (max_side, max_side))
        im = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
    except (OSError, ValueError, SyntaxError):
        notes.append("the embedded preview is unreadable: demosaiced instead")
        return None
    if max(im.size) < 2 * max_side:
        return None
    return im
