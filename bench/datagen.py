"""Write a labelled near-duplicate set for the benchmarks (the demo's generator, with every photo by default).

python -m bench.datagen OUT_DIR [--size 1024] [--seed 7] [--photos N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dupwatch.daemon.demo import PHOTOS, SPLIT_PHOTOS, VARIANTS, generate

__all__ = ["PHOTOS", "SPLIT_PHOTOS", "camera_set", "generate", "main"]


def camera_set(folder: Path, photos: int) -> None:
    """Camera-size JPEGs into `folder` unless they are there: 4032 px originals of the first `photos` sample
    photos with their JPEG variants (no PNG or WebP ones, no unreadable files)."""
    if (folder / "truth.json").exists():
        return
    jpeg_only = tuple(v for v in VARIANTS if v.name not in ("format_png", "format_webp"))
    generate(folder, size=4032, photos=PHOTOS[:photos], bad=False, variants=jpeg_only)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, nargs="+", default=[1024], help="long side(s) of the originals, in turn")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--photos", type=int, default=len(PHOTOS), help="use the first N photos")
    args = ap.parse_args()
    truth = generate(args.out, size=tuple(args.size), seed=args.seed, photos=PHOTOS[: args.photos])
    n = len(truth["transform"])
    print(f"wrote {n} files, {len(truth['groups'])} groups, truth in {args.out / 'truth.json'}")


if __name__ == "__main__":
    main()
