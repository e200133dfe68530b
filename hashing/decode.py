"""Decoding: bytes -> a small, upright, opaque RGB image, or a DecodeError with a reason.

Every fingerprint is computed from this one small image, so the expensive part (the decode) happens once.
JPEGs are decoded at reduced scale by libjpeg (`Image.draft`): no fingerprint needs more than ~256 px, and it
is about twice as fast on camera-size files. EXIF orientation is applied first, so a photo that only carries a
rotation tag fingerprints like the picture a user sees.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from datetime import datetime

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from dupwatch.hashing.errors import DecodeError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a half-written file must raise, never decode as grey

try:  # HEIC/HEIF from phones, when the optional plugin is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - optional
    pass

DEFAULT_MAX_SIDE = 448
DEFAULT_MAX_PIXELS = 200_000_000  # a 200 MP panorama still decodes; a forged 50000x50000 header does not

_ORIENTATION = 0x0112
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


@dataclass
class Decoded:
    """The small working image plus the facts about the full-size original that reports need."""

    image: Image.Image  # RGB, upright, longest side <= max_side
    width: int  # full size, as displayed (after orientation)
    height: int
    format: str
    orientation: int
    taken_at: str | None  # EXIF capture time, ISO 8601, when present
    exif_fields: int  # how many EXIF tags the file carries: one of the keeper criteria
    notes: tuple[str, ...] = ()  # what was odd but did not stop the decode (a bad orientation tag, ...)


def _sniff(data: bytes) -> str:
    head = data[:512].lstrip()
    if head.startswith(b"<"):
        return "not an image: markup/text file (e.g. SVG or HTML)"
    try:
        head.decode("utf-8")
        return "not an image: text file"
    except UnicodeDecodeError:
        return "not an image: unrecognised format"


# TIFF's own structure tags (sizes, strips, compression, resolution ...) and the pointers to sub-IFDs: a TIFF or a
# PNG carries them whatever camera or scanner made it, so they say nothing about a photo's provenance
_LAYOUT_TAGS = frozenset(
    {
        254,
        255,
        256,
        257,
        258,
        259,
        262,
        263,
        266,
        273,
        277,
        278,
        279,
        280,
        281,
        282,
        283,
        284,
        296,
        317,
        320,
        322,
        323,
        324,
        325,
        338,
        339,
        347,
        530,
        531,
        532,
        700,
        34665,
        34853,
        40965,
        34675,
    }
)


def _camera_tags(exif: Image.Exif) -> int:
    """How many descriptive EXIF tags a file carries (camera, lens, exposure, time, GPS ...): a keeper criterion."""
    count = sum(1 for tag in exif if tag not in _LAYOUT_TAGS)
    for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
        try:
            count += len(exif.get_ifd(ifd))
        except Exception:  # malformed sub-IFDs must not lose the image
            continue
    return count


def _exif_time(exif: Image.Exif) -> str | None:
    raw = None
    try:
        raw = exif.get_ifd(ExifTags.IFD.Exif).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except Exception:  # malformed EXIF must not lose the image
        raw = exif.get(_DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does it)
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EARLY_REDUCE_PIXELS = 16_000_000  # larger decoded images are reduced before any full-size copy is made
_REDUCIBLE = ("RGB", "RGBA", "L", "LA", "I", "F")


def _orientation(value: object, notes: list[str]) -> int:
    """The EXIF orientation when it is what the standard says (an integer 1-8); anything else (text, a rational,
    garbage) is ignored with a note, and the pixels are used as stored."""
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    notes.append(f"EXIF orientation {value!r} is not an integer 1-8: ignored")
    return 1


def _early_reduce(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink a very large decoded image (a 64 MP PNG, say) right away, so that the conversions after it work on
    a small copy: one worker then needs about the decoded size, not several full-size copies. Smaller images are
    left as they are, so their fingerprints do not depend on this."""
    if im.width * im.height <= EARLY_REDUCE_PIXELS:
        return im
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    elif im.mode not in _REDUCIBLE:
        alpha = "A" in im.mode or (im.mode == "P" and "transparency" in im.info)
        im = im.convert("RGBA" if alpha else "RGB")
    im.thumbnail((2 * max_side, 2 * max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """Alpha composited on white, palette and greyscale to RGB: the hashes expect three opaque channels."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        im = im.convert("I").point(lambda v: v / 256).convert("L") if im.mode != "F" else im.convert("L")
    return im.convert("RGB")


def decode(data: bytes, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode fully (truncation is detected) but only at the scale the fingerprints need."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Pillow's complaints about a file it still reads ("Corrupt EXIF data", ...) become the file's notes
            # instead of lines on the user's terminal
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow refuses on its own at 2x its default limit (~179 MP) before we see the size: make its
            # check ours, so max_pixels (config) is the one limit that decides
            Image.MAX_IMAGE_PIXELS = max_pixels
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise DecodeError(f"decompression bomb: {w}x{h} pixels is over the {max_pixels:,} pixel limit")
            fmt = im.format or "unknown"
            exif = im.getexif()
            orientation = _orientation(exif.get(_ORIENTATION), notes)
            taken_at = _exif_time(exif)
            exif_fields = _camera_tags(exif)
            if fmt == "JPEG":  # the long side only needs max_side: a 4000x3000 photo still decodes at 1/8 scale
                s = max_side / max(w, h, 1)
                im.draft("RGB", (max(1, round(w * s)), max(1, round(h * s))))
            im.load()
        notes += sorted({str(w.message).strip() for w in caught})
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(_sniff(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError(f"decompression bomb: over the {max_pixels:,} pixel limit") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
            raise DecodeError(f"truncated image ({msg})") from None
        raise DecodeError(f"corrupt image: {msg}") from None
    except (SyntaxError, ValueError, TypeError, IndexError, EOFError, struct.error) as e:
        raise DecodeError(f"corrupt image: {e}") from None
    except MemoryError:
        raise DecodeError("image too large to decode in memory") from None

    if orientation in (5, 6, 7, 8):
        w, h = h, w
    try:
        small = _early_reduce(im, max_side)
        method = _TRANSPOSE.get(orientation)
        if method is not None:
            small = small.transpose(method)
        small = _flatten(small)
        if max(small.size) > max_side:
            small.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except (OSError, ValueError) as e:
        raise DecodeError(f"corrupt image: {e}") from None
    except MemoryError:
        raise DecodeError("image too large to decode in memory") from None
    return Decoded(small, w, h, fmt, orientation, taken_at, exif_fields, tuple(notes))
