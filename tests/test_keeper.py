"""Keeper rules: which file of a group stays. Unit tests on records, and real files for the facts the rules read
(sharpness comparable across formats, camera EXIF tags counted, TIFF layout tags not)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dupwatch.daemon.demo import exif_bytes, load_photo
from dupwatch.daemon.keeper import KeeperPolicy, choose, parse_rules
from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.hashing.fingerprint import fingerprint_bytes


def _rec(path: str, fmt: str = "JPEG", w: int = 4000, h: int = 3000, size: int = 3_000_000, **kw: object) -> FileRecord:
    values: dict = {"sharpness": 100.0, "exif_fields": 10, **kw}
    return FileRecord(
        id=hash(path) & 0xFFFF,
        path=path,
        size=size,
        mtime_ns=1,
        status=FileStatus.OK,
        format=fmt,
        width=w,
        height=h,
        **values,
    )


def test_a_lossless_screenshot_is_kept_over_its_jpeg() -> None:
    png = _rec("/p/shot.png", "PNG", 1170, 2532, 900_000, sharpness=80.0, exif_fields=0)
    jpg = _rec("/p/shot.jpg", "JPEG", 1170, 2532, 300_000, sharpness=120.0, exif_fields=0)  # artefacts look sharp
    d = choose([jpg, png])
    assert d.keeper is png and d.reason == "best by format"


def test_a_camera_jpeg_is_kept_over_a_tiff_of_it() -> None:
    tiff = _rec("/p/scan.tif", "TIFF", 4000, 3000, 16_500_000, sharpness=140.0, exif_fields=0)
    jpg = _rec("/p/IMG_1.jpg", "JPEG", 4000, 3000, 3_000_000, sharpness=100.0, exif_fields=40)
    assert choose([tiff, jpg]).keeper is jpg
    heic = _rec("/p/IMG_1.heic", "HEIF", 4000, 3000, 1_500_000)
    assert choose([tiff, jpg, heic]).keeper is heic  # raw, heic, png, jpeg: the default order


def test_small_differences_in_resolution_or_size_do_not_decide() -> None:
    a = _rec("/p/a.jpg", w=4000, h=3000, size=3_000_000, sharpness=100.0)
    b = _rec("/p/b.jpg", w=4000, h=2990, size=3_050_000, sharpness=160.0)  # one strip cropped, a bit larger
    d = choose([a, b])
    assert d.keeper is b and d.reason == "best by sharpness"
    strict = choose([a, b], KeeperPolicy(min_difference=0.0))
    assert strict.keeper is a and strict.reason == "best by resolution"


def test_the_best_shot_is_the_sharpest_then_the_best_exposed() -> None:
    blurred = _rec("/b/1.jpg", sharpness=40.0, exposure=0.95)
    sharp_dark = _rec("/b/2.jpg", sharpness=100.0, exposure=0.55)
    sharp_good = _rec("/b/3.jpg", w=3000, h=2000, sharpness=95.0, exposure=0.93)
    d = choose([blurred, sharp_dark, sharp_good], KeeperPolicy().best_shot())
    assert d.keeper is sharp_good and d.reason == "best by sharpness, exposure"
    assert choose([blurred, sharp_dark, sharp_good]).keeper is not sharp_good  # duplicates: largest first


def test_an_overexposed_frame_scores_lower(photo: Image.Image) -> None:
    from PIL import ImageEnhance

    def score(im: Image.Image) -> float:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        return fingerprint_bytes(buf.getvalue()).exposure

    assert score(ImageEnhance.Brightness(photo).enhance(2.2)) < score(photo) - 0.15
    assert score(ImageEnhance.Brightness(photo).enhance(0.3)) < score(photo) - 0.15


def test_preferred_folders() -> None:
    dcim = _rec("/home/u/Pictures/DCIM/Camera/IMG_1.jpg", sharpness=100.0)
    wa = _rec("/home/u/Pictures/WhatsApp/Media/IMG-1-WA0001.jpg", sharpness=130.0)
    assert choose([dcim, wa]).keeper is wa  # by sharpness when no folder is preferred
    policy = KeeperPolicy(rules=parse_rules("folder,sharpness"), folders=("DCIM", "Camera"))
    assert choose([dcim, wa], policy).keeper is dcim


def test_the_format_order_is_configurable() -> None:
    png, jpg = _rec("/p/a.png", "PNG"), _rec("/p/a.jpg", "JPEG")
    assert choose([jpg, png]).keeper is png
    assert choose([jpg, png], KeeperPolicy(formats=("jpeg", "png"))).keeper is jpg


def test_config_and_cli_carry_the_preferences(tmp_path: Path) -> None:
    from dupwatch.daemon.config import load_config

    p = tmp_path / "c.toml"
    p.write_text('[keeping]\nkeeper_formats = ["jpeg"]\nkeeper_folders = ["DCIM"]\nkeeper_min_difference = 0.2\n')
    policy = KeeperPolicy.from_config(load_config(p))
    assert (policy.formats, policy.folders, policy.min_difference) == (("jpeg",), ("DCIM",), 0.2)


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return load_photo("coffee").resize((1600, 1200))


def test_sharpness_is_comparable_across_formats_and_tiff_tags_are_not_exif(photo: Image.Image) -> None:
    jpeg = fingerprint_bytes(_encode(photo, "JPEG", quality=92, exif=exif_bytes()))
    tiff = fingerprint_bytes(_encode(photo, "TIFF"))
    png = fingerprint_bytes(_encode(photo, "PNG"))
    assert abs(jpeg.sharpness - tiff.sharpness) <= 0.10 * max(jpeg.sharpness, tiff.sharpness)
    assert abs(png.sharpness - tiff.sharpness) <= 0.02 * tiff.sharpness  # the same pixels: the same figure
    assert tiff.exif_fields == 0 and png.exif_fields == 0  # width, strips, compression ... are not EXIF
    assert jpeg.exif_fields >= 3  # make, model, date (and the capture time in the Exif IFD)


def test_a_raw_files_embedded_preview_is_used_when_large_enough() -> None:
    """LibRaw hands the camera's own JPEG preview out; dupwatch uses it (no demosaic) when it is at least twice the
    working size, upright by its EXIF orientation."""
    rawpy = pytest.importorskip("rawpy")
    from dupwatch.hashing.raw import _preview

    class Thumb:
        def __init__(self, data: bytes) -> None:
            self.format, self.data = rawpy.ThumbFormat.JPEG, data

    class Raw:
        def __init__(self, data: bytes) -> None:
            self.thumb = Thumb(data)

        def extract_thumb(self) -> Thumb:
            return self.thumb

    big = _encode(load_photo("coffee").resize((1200, 800)), "JPEG", quality=85, exif=exif_bytes(orientation=6))
    notes: list[str] = []
    im = _preview(Raw(big), 256, notes)  # type: ignore[arg-type]
    assert im is not None and im.size[1] > im.size[0]  # EXIF orientation 6: shown portrait
    small = _encode(load_photo("coffee").resize((300, 200)), "JPEG")
    assert _preview(Raw(small), 256, notes) is None  # too small: demosaic instead
    assert _preview(Raw(b"\xff\xd8 broken"), 256, notes) is None and "unreadable" in notes[0]
