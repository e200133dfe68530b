"""Decoding: orientation, alpha, reduced-scale JPEG, and one clear error for every kind of bad file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupwatch.daemon.demo import bomb_png, exif_bytes, load_photo
from dupwatch.hashing.decode import decode
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.fingerprint import fingerprint_file
from dupwatch.hashing.perceptual import average_hash, hamming


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return load_photo("chelsea")


def test_exif_orientation_is_applied_before_fingerprinting(cat: Image.Image) -> None:
    # Orientation 6 means "rotate 90 degrees clockwise to display": store the pixels rotated the other way.
    stored = cat.rotate(90, expand=True)
    d = decode(_jpeg(stored, exif=exif_bytes(orientation=6)))
    upright = decode(_jpeg(cat))
    assert (d.width, d.height) == (cat.width, cat.height)
    assert d.orientation == 6
    assert hamming(average_hash(d.image), average_hash(upright.image)) <= 4
    assert hamming(average_hash(decode(_jpeg(stored)).image), average_hash(upright.image)) > 12


def test_jpeg_is_decoded_at_reduced_scale_but_reports_full_size(cat: Image.Image) -> None:
    big = cat.resize((4032, 2682))
    d = decode(_jpeg(big), max_side=256)
    assert max(d.image.size) <= 256
    assert (d.width, d.height) == (4032, 2682)


def test_alpha_is_flattened_on_white() -> None:
    im = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    d = decode(buf.getvalue())
    assert d.image.mode == "RGB"
    assert np.asarray(d.image).min() == 255  # fully transparent red shows as the white background


def test_exif_capture_time_and_field_count(cat: Image.Image) -> None:
    d = decode(_jpeg(cat, exif=exif_bytes(when="2021:07:04 10:11:12")))
    assert d.taken_at == "2021-07-04T10:11:12"
    assert d.exif_fields >= 3


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: b"", "empty file"),
        (lambda good: b"hello, I am text in a .jpg\n" * 10, "not an image: text"),
        (lambda good: b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "markup"),
        (lambda good: bytes(range(256)) * 8, "not an image"),
        (lambda good: bomb_png(), "decompression bomb"),
    ],
)
def test_bad_bytes_raise_one_error_type_with_a_reason(cat: Image.Image, make, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode(make(_jpeg(cat)))
    assert reason in e.value.reason


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels and holds almost nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_pixel_limit_is_configurable_and_is_the_only_limit(cat: Image.Image) -> None:
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode(_jpeg(cat), max_pixels=1000)
    # 195 MP: over Pillow's own built-in refusal (~179 MP), under dupwatch's default 200 MP limit. It must fail
    # for what it is (no pixel data), not as a bomb; with a lower configured limit it is a bomb.
    claim = _png_header(15000, 13000)
    with pytest.raises(DecodeError) as e:
        decode(claim)
    assert "decompression bomb" not in e.value.reason
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode(claim, max_pixels=100_000_000)


def test_unreadable_and_vanished_files_are_results_not_exceptions(tmp_path: Path) -> None:
    gone = fingerprint_file(tmp_path / "gone.jpg")
    assert gone.fingerprint is None and "vanished" in (gone.error or "")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert "directory" in (fingerprint_file(folder).error or "")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + os.urandom(5000))
    assert "too large" in (fingerprint_file(big, max_bytes=1000).error or "")


def test_fingerprint_reads_once_and_describes_the_same_bytes(tmp_path: Path, cat: Image.Image) -> None:
    p = tmp_path / "cat.jpg"
    p.write_bytes(_jpeg(cat))
    r = fingerprint_file(p)
    assert r.fingerprint is not None
    assert r.fingerprint.size == p.stat().st_size
    assert r.fingerprint.pixels.shape == (224, 224, 3)
    assert len(r.fingerprint.ahash_views) == 8


def test_heic_from_phones_decodes_when_pillow_heif_is_installed(cat: Image.Image) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    cat.save(buf, "HEIF", quality=80)
    d = decode(buf.getvalue())
    assert d.format in ("HEIF", "HEIC") and (d.width, d.height) == cat.size
    assert hamming(average_hash(d.image), average_hash(decode(_jpeg(cat)).image)) <= 4


def test_permission_denied_is_a_reason_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root here, where chmod 000 does not stop a read: make the open refuse instead
    p = tmp_path / "locked.jpg"
    p.write_bytes(b"\xff\xd8\xff")
    real_open = os.open

    def refusing_open(file: str, *a: int, **kw: int) -> int:
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **kw)

    monkeypatch.setattr(os, "open", refusing_open)
    assert fingerprint_file(p).error == "permission denied"
