"""A small real library for the web app's tests: two photos with copies, a singleton, scanned with the real CNN."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import load_photo, scale_to
from dupwatch.hashing.embedding import Embedder
from tests.helpers import scan_folder

SIDE = 640


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_library(root: Path) -> dict[str, list[Path]]:
    """chelsea: original, a smaller copy, a re-encoded copy; coffee: original and a copy turned by 90 degrees;
    astronaut alone. Returns the files of each group by photo name."""
    out: dict[str, list[Path]] = {}
    cat = scale_to(load_photo("chelsea"), SIDE)
    coffee = scale_to(load_photo("coffee"), SIDE)
    files = {
        "chelsea": {
            "cats/chelsea.jpg": _jpeg(cat),
            "cats/chelsea_small.jpg": _jpeg(scale_to(cat, 400)),
            "phone/IMG_0001.jpg": _jpeg(cat, 60),
        },
        "coffee": {
            "coffee/coffee.jpg": _jpeg(coffee),
            "phone/IMG_0002.jpg": _jpeg(coffee.transpose(Image.Transpose.ROTATE_90)),
        },
        "astronaut": {"space/astronaut.jpg": _jpeg(scale_to(load_photo("astronaut"), SIDE))},
    }
    for name, named in files.items():
        for rel, data in named.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            out.setdefault(name, []).append(p)
    return out


def scanned_library(tmp: Path, embedder: Embedder) -> tuple[Config, dict[str, list[Path]]]:
    root = (tmp / "photos").resolve()
    files = make_library(root)
    db = tmp / "state" / "dupwatch.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    scan_folder(root, db, embedder).close()
    cfg = Config(db=db, workers=0, quarantine=tmp / "quarantine")
    return cfg, files
