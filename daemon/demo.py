"""The demo photo set: real photographs that PyPI packages ship (scikit-image's samples) and their near-duplicates.

Each photo yields an original (camera-style JPEG with EXIF) and the variants a camera folder really sees; a few
photos are cut into non-overlapping halves to make hard negatives (distinct pictures that look alike), and a few
bad files show how unreadable ones are reported. Everything is seeded, so the same call gives the same files.
`truth.json` has the format of ../shared/bench-data/truth.json, so the benchmarks (`bench/datagen.py`) score it
with the same scorer. scikit-image is only needed here (`pip install dupwatch[demo]`).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

# Colour photographs, then greyscale ones; each name is a scikit-image data function.
PHOTOS: tuple[str, ...] = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "retina",
    "immunohistochemistry",
    "cell",
    "clock",
    "camera",
    "moon",
    "page",
)

# Photos whose halves become hard negatives (same scene, same palette, no overlap). They are not in PHOTOS: a half
# of a group's original would be a 50 % crop of it, which is neither clearly a duplicate nor clearly not.
SPLIT_PHOTOS: tuple[str, ...] = ("hubble_deep_field", "gravel", "grass", "brick", "coins")

TRANSFORM_HELP = {
    "original": "the scene's original (camera-style JPEG with EXIF)",
    "jpeg": "re-encoded JPEG, quality 40-80",
    "downscale": "downscaled to 30-60% of each side",
    "crop": "10-20% cropped away per axis",
    "rotate90": "pixels rotated by 90 or 270 degrees",
    "rotate180": "pixels rotated by 180 degrees",
    "exif_rotate": "pixels untouched, EXIF Orientation 6 or 8 set (displays rotated)",
    "flip": "horizontal mirror",
    "color": "brightness/contrast/saturation shift",
    "grayscale": "converted to grayscale",
    "blur": "Gaussian blur, radius 1-2.5 px",
    "noise": "Gaussian noise, sigma 5-12",
    "overlay": "caption bar and date stamp",
    "format_png": "lossless PNG",
    "format_webp": "lossy WebP, quality 75",
    "burst": "burst shot: view shifted by 2-5% plus sensor noise and a tiny exposure change",
    "exact_copy": "byte-identical copy in another folder",
    "singleton": "a half or tile of a split scene: distinct from its neighbours",
}


def load_photo(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.dtype != np.uint8:
        arr = (255 * (arr.astype(np.float64) / max(float(arr.max()), 1e-9))).astype(np.uint8)
    im = Image.fromarray(arr)
    return im.convert("RGB")


def scale_to(im: Image.Image, long_side: int) -> Image.Image:
    s = long_side / max(im.size)
    return im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)


def exif_bytes(orientation: int = 1, when: str = "2024:06:01 12:00:00") -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "dupwatch-bench"
    ex[0x0110] = "Synthetic Camera"
    ex[0x0132] = when
    if orientation != 1:
        ex[0x0112] = orientation
    ex.get_ifd(0x8769)[0x9003] = when
    return ex.tobytes()


def jpeg_bytes(im: Image.Image, quality: int = 92, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, exif=exif or b"")
    return buf.getvalue()


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def add_noise(im: Image.Image, rng: random.Random, sigma: float) -> Image.Image:
    a = np.asarray(im).astype(np.float32)
    a += np.random.default_rng(rng.randrange(1 << 30)).normal(0, sigma, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@dataclass
class Variant:
    name: str
    make: Callable[[Image.Image, random.Random], tuple[bytes, str]]  # -> (file bytes, suffix)


def _crop(im: Image.Image, rng: random.Random) -> tuple[bytes, str]:
    fx, fy = rng.uniform(0.10, 0.20), rng.uniform(0.10, 0.20)
    lx, ty = rng.uniform(0, fx), rng.uniform(0, fy)
    box = (int(im.width * lx), int(im.height * ty), int(im.width * (1 - fx + lx)), int(im.height * (1 - fy + ty)))
    return jpeg_bytes(im.crop(box)), ".jpg"


def _burst(im: Image.Image, rng: random.Random) -> tuple[bytes, str]:
    f = rng.uniform(0.02, 0.05)
    dx, dy = int(im.width * f) * rng.choice((-1, 1)), int(im.height * f * rng.uniform(0, 1))
    shifted = im.crop((max(dx, 0), max(dy, 0), im.width + min(dx, 0), im.height + min(dy, 0)))
    shifted = ImageEnhance.Brightness(shifted).enhance(rng.uniform(0.95, 1.05))
    return jpeg_bytes(add_noise(shifted.resize(im.size), rng, 4)), ".jpg"


def _overlay(im: Image.Image, rng: random.Random) -> tuple[bytes, str]:
    out = im.copy()
    d = ImageDraw.Draw(out)
    bar = max(12, im.height // 10)
    d.rectangle((0, im.height - bar, im.width, im.height), fill=(0, 0, 0))
    d.text((10, im.height - bar + 2), "Holiday 2024 - shared with family", fill=(255, 255, 255))
    d.text((im.width - 120, 10), "2024-06-01 12:00", fill=(255, 140, 0))
    return jpeg_bytes(out), ".jpg"


VARIANTS: tuple[Variant, ...] = (
    Variant("jpeg", lambda im, r: (jpeg_bytes(im, r.choice((40, 60, 80))), ".jpg")),
    Variant(
        "downscale",
        lambda im, r: (jpeg_bytes(im.resize((int(im.width * (s := r.uniform(0.3, 0.6))), int(im.height * s)))), ".jpg"),
    ),
    Variant("crop", _crop),
    Variant("rotate90", lambda im, r: (jpeg_bytes(im.rotate(r.choice((90, 270)), expand=True)), ".jpg")),
    Variant("rotate180", lambda im, r: (jpeg_bytes(im.rotate(180)), ".jpg")),
    Variant("exif_rotate", lambda im, r: (jpeg_bytes(im, exif=exif_bytes(r.choice((6, 8)))), ".jpg")),
    Variant("flip", lambda im, r: (jpeg_bytes(ImageOps.mirror(im)), ".jpg")),
    Variant(
        "color",
        lambda im, r: (
            jpeg_bytes(
                ImageEnhance.Color(
                    ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(r.uniform(0.75, 1.3))).enhance(
                        r.uniform(0.8, 1.25)
                    )
                ).enhance(r.uniform(0.6, 1.5))
            ),
            ".jpg",
        ),
    ),
    Variant("grayscale", lambda im, r: (jpeg_bytes(im.convert("L")), ".jpg")),
    Variant("blur", lambda im, r: (jpeg_bytes(im.filter(ImageFilter.GaussianBlur(r.uniform(1.0, 2.5)))), ".jpg")),
    Variant("noise", lambda im, r: (jpeg_bytes(add_noise(im, r, r.uniform(5, 12))), ".jpg")),
    Variant("overlay", _overlay),
    Variant("format_png", lambda im, r: (encode(im, "PNG"), ".png")),
    Variant("format_webp", lambda im, r: (encode(im, "WEBP", quality=75), ".webp")),
    Variant("burst", _burst),
)

BAD_FILES: dict[str, Callable[[bytes], bytes]] = {
    "bad_truncated": lambda good: good[: len(good) // 2],
    "bad_empty": lambda good: b"",
    "bad_text": lambda good: b"this is not an image, only text with an image name\n" * 4,
    "bad_random": lambda good: random.Random(3).randbytes(4096),
}


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 50000x50000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def generate(
    out: Path,
    size: int | tuple[int, ...] = 1024,
    seed: int = 7,
    photos: tuple[str, ...] = PHOTOS,
    variants: tuple[Variant, ...] = VARIANTS,
    split: tuple[str, ...] = SPLIT_PHOTOS,
    bad: bool = True,
) -> dict:
    """Write the set under out/images and out/truth.json; returns the truth dict. `size` is the long side of the
    originals, or several sizes used in turn (thumbnails to camera-size)."""
    rng = random.Random(seed)
    sizes = (size,) if isinstance(size, int) else tuple(size)
    images = out / "images"
    truth: dict = {
        "format": "dupwatch-bench-truth-1",
        "root": "images",
        "groups": [],
        "singletons": [],
        "bad": [],
        "transform": {},
        "hard_negatives": [],
        "originals": {},
        "transform_help": TRANSFORM_HELP,
        "meta": {"seed": seed, "sizes": list(sizes), "generator": "dupwatch.daemon.demo"},
    }

    def write(rel: str, data: bytes, kind: str) -> str:
        path = images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        truth["transform"][rel] = kind
        return rel

    for n, name in enumerate(photos):
        src = scale_to(load_photo(name), sizes[n % len(sizes)])
        group = [write(f"{name}/original.jpg", jpeg_bytes(src, exif=exif_bytes()), "original")]
        truth["originals"][str(len(truth["groups"]))] = group[0]
        group.append(write(f"copies/{name}.jpg", (images / group[0]).read_bytes(), "exact_copy"))
        for v in variants:
            data, suffix = v.make(src, rng)
            group.append(write(f"{name}/{v.name}{suffix}", data, v.name))
        truth["groups"].append(group)

    for n, name in enumerate(split):
        src = scale_to(load_photo(name), sizes[n % len(sizes)])
        w, h = src.size
        if w >= h:
            halves = [src.crop((0, 0, w // 2, h)), src.crop((w // 2, 0, w, h))]
        else:
            halves = [src.crop((0, 0, w, h // 2)), src.crop((0, h // 2, w, h))]
        paths = [
            write(f"split/{name}_{i}.jpg", jpeg_bytes(half, exif=exif_bytes()), "singleton")
            for i, half in enumerate(halves)
        ]
        truth["singletons"].extend(paths)
        truth["hard_negatives"].append([paths[0], paths[1], "adjacent_crops"])

    if bad:
        good = (images / truth["groups"][0][0]).read_bytes()
        for kind, make in BAD_FILES.items():
            truth["bad"].append(write(f"bad/{kind}.jpg", make(good), kind))
        truth["bad"].append(write("bad/bad_bomb.png", bomb_png(), "bad_bomb"))

    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth
