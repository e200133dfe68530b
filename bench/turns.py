"""Turned-copy recall, pair by pair: each sample photo and each of its seven turned or mirrored copies, scanned
alone together (a new database each time), must make one duplicate group.

    python -m bench.turns [--size 640] [--photos N]

In a library a turned copy can join its group through other copies; alone with its original it has to be matched
to it. Pictures that look much the same turned (a clock face, a retina, coins, a deep field) are the hard ones: the
CNN finds them alike unturned, and only the geometry in the right view tells.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import PHOTOS, jpeg_bytes, load_photo, scale_to
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.store import Store
from dupwatch.hashing.embedder import Embedder
from dupwatch.hashing.views import dihedral

PICTURES = (*PHOTOS, "hubble_deep_field", "coins", "brick")


def turned_recall(pictures: tuple[str, ...], size: int, embedder: Embedder) -> tuple[int, list[str]]:
    """(pairs tried, 'picture/view' of each turned copy that did not group with its original)."""
    missed: list[str] = []
    tried = 0
    for name in pictures:
        photo = np.asarray(scale_to(load_photo(name), size))
        for view in range(1, 8):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "photos"
                root.mkdir()
                (root / "a.jpg").write_bytes(jpeg_bytes(Image.fromarray(photo)))
                (root / "b.jpg").write_bytes(jpeg_bytes(Image.fromarray(dihedral(photo, view))))
                cfg = Config(db=Path(tmp) / "turns.db", workers=0)
                with Store(cfg.db) as store:
                    with open_pipeline(cfg, store, embedder) as p:
                        p.scan([root])
                    grouped = bool(store.read.groups())
            tried += 1
            if not grouped:
                missed.append(f"{name}/{view}")
    return tried, missed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=640, help="long side of the originals (default 640)")
    ap.add_argument("--photos", type=int, default=len(PICTURES), help="the first N pictures")
    args = ap.parse_args()
    from dupwatch.hashing.embedding import default_embedder

    tried, missed = turned_recall(PICTURES[: args.photos], args.size, default_embedder())
    print(f"{args.size} px: {tried - len(missed)}/{tried} turned copies grouped with their original alone")
    print(f"missed: {', '.join(missed) or 'none'}")


if __name__ == "__main__":
    main()
