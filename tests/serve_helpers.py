"""A small real library for the web app's tests: two photos with copies, a singleton, scanned with the real CNN."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import jpeg_bytes, load_photo, scale_to
from dupwatch.hashing.embedding import Embedder
from tests.helpers import scan_folder

SIDE = 640


def make_library(root: Path) -> dict[str, list[Path]]:
    """chelsea: original, a smaller copy, a re-encoded copy; coffee: original and a copy turned by 90 degrees;
    astronaut alone. Returns the files of each group by photo name."""
    out: dict[str, list[Path]] = {}
    cat = scale_to(load_photo("chelsea"), SIDE)
    coffee = scale_to(load_photo("coffee"), SIDE)
    files = {
        "chelsea": {
            "cats/chelsea.jpg": jpeg_bytes(cat, 90),
            "cats/chelsea_small.jpg": jpeg_bytes(scale_to(cat, 400), 90),
            "phone/IMG_0001.jpg": jpeg_bytes(cat, 60),
        },
        "coffee": {
            "coffee/coffee.jpg": jpeg_bytes(coffee, 90),
            "phone/IMG_0002.jpg": jpeg_bytes(coffee.transpose(Image.Transpose.ROTATE_90), 90),
        },
        "astronaut": {"space/astronaut.jpg": jpeg_bytes(scale_to(load_photo("astronaut"), SIDE), 90)},
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
