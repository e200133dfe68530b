"""Scan throughput on camera-size JPEGs (4032x3024, ~4 MB), per stage and end to end.

    python -m bench.speed [--images 48] [--out DIR] [--workers 2]

Stages are timed one at a time over the same files (decode and hashes on one core; the CNN on all cores, in
batches), then the whole scan runs with the worker pool so the stages overlap. Figures are images per second;
compare ratios within one run, the machines are noisy.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dupwatch.daemon.demo import PHOTOS, SPLIT_PHOTOS, add_noise, exif_bytes, load_photo

CAMERA = (4032, 3024)


def make_camera_jpegs(out: Path, n: int, seed: int = 1) -> list[Path]:
    """n distinct camera-size JPEGs: quarters of real photos (no two overlap), upscaled, with sensor-like noise
    so they weigh ~4 MB like a phone's."""
    import random

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    tiles = []
    for name in PHOTOS + SPLIT_PHOTOS:
        base = load_photo(name)
        w, h = base.size
        tiles += [base.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]
    for i in range(n):
        p = out / f"IMG_{i:04d}.jpg"
        if not p.exists():
            tile = tiles[i % len(tiles)]
            if i >= len(tiles):  # more files than tiles: a colour-inverted tile is a different picture
                tile = Image.eval(tile, lambda v: 255 - v)
            im = tile.resize(CAMERA, Image.Resampling.BICUBIC)
            im = add_noise(im, rng, 7)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=92, exif=exif_bytes())
            p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} img/s  ({1000 * seconds / n:6.1f} ms/img)"


def cnn_paths(pixels: np.ndarray) -> list[tuple[str, float, float, float]]:
    """(path, seconds for all of `pixels`, min cosine to the fp32 eager reference, seconds to build or load) for
    every inference path this machine has (hashing.inference)."""
    import torch

    from dupwatch.hashing.embedding import TorchEmbedder, load_lite0, to_input
    from dupwatch.hashing.inference import native_bf16

    # (precision, frozen, device, images per run: 0 = the embedder's default there)
    variants = [("fp32", False, "cpu", 0), ("fp32", True, "cpu", 0)]
    if native_bf16():
        variants += [("bf16", False, "cpu", 0), ("bf16", True, "cpu", 16), ("bf16", True, "cpu", 0)]
    if torch.cuda.is_available():
        variants += [("fp32", False, "cuda", 0), ("fp16", True, "cuda", 0)]
    model = load_lite0()
    with torch.inference_mode():
        t = time.perf_counter()
        feats = [model.features_and_local(to_input(pixels[i : i + 16]))[0] for i in range(0, len(pixels), 16)]
        ref_seconds = time.perf_counter() - t
    ref = torch.nn.functional.normalize(torch.cat(feats), dim=1).numpy()
    out = [("fp32 eager, BatchNorm unfolded (the reference), batch 16", ref_seconds, 1.0, 0.0)]
    with tempfile.TemporaryDirectory() as cache:
        for precision, frozen, device, batch in variants:
            emb = TorchEmbedder(
                model, batch_size=batch, device=device, precision=precision, frozen=frozen, cache_dir=Path(cache)
            )
            t = time.perf_counter()
            emb.embed(pixels[:2])  # build (or load)
            build = time.perf_counter() - t
            for _ in range(2):  # a graph's first runs at a new batch shape optimise it: steady state is timed
                emb.embed(pixels[:16])
            t = time.perf_counter()
            vecs = emb.embed(pixels)
            seconds = time.perf_counter() - t
            folded = "BN folded, channels_last" + (", frozen graph" if frozen else ", eager")
            folded += f", batch {emb.batch_size}"
            out.append((f"{device} {precision}: {folded}", seconds, float(np.min(np.sum(vecs * ref, 1))), build))
    return out


def run(n: int, data: Path, workers: int) -> dict[str, float]:
    from dupwatch.daemon.config import Config
    from dupwatch.daemon.pipeline import open_pipeline
    from dupwatch.daemon.store import Store
    from dupwatch.hashing.decode import decode
    from dupwatch.hashing.embedding import default_embedder
    from dupwatch.hashing.fingerprint import content_hash, fingerprint_bytes, laplacian_variance
    from dupwatch.hashing.perceptual import average_hash_views, colour_hash

    paths = make_camera_jpegs(data, n)
    mb = sum(p.stat().st_size for p in paths) / n / 1e6
    print(f"{n} JPEGs of {CAMERA[0]}x{CAMERA[1]}, {mb:.1f} MB on average, in {data}")
    blobs = [p.read_bytes() for p in paths]
    figures: dict[str, float] = {}

    t = time.perf_counter()
    decoded = [decode(b) for b in blobs]
    figures["decode"] = time.perf_counter() - t

    t = time.perf_counter()
    for d, b in zip(decoded, blobs, strict=True):
        content_hash(b)
        average_hash_views(d.image)
        colour_hash(d.image)
        laplacian_variance(np.asarray(d.image.convert("L")))
    figures["hashes"] = time.perf_counter() - t

    fps = [fingerprint_bytes(b) for b in blobs]
    embedder = default_embedder()
    embedder.embed_with_local(np.stack([fps[0].pixels] * 2))  # warm-up
    t = time.perf_counter()
    pixels = np.stack([f.pixels for f in fps])
    embedder.embed_with_local(pixels)
    figures["embedding"] = time.perf_counter() - t

    cnn = cnn_paths(pixels)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(db=Path(tmp) / "bench.db", workers=workers)
        store = Store(cfg.db)
        t = time.perf_counter()
        before = embedder.images
        with open_pipeline(cfg, store, embedder) as pipeline:
            stats = pipeline.scan([data])
        figures["end_to_end"] = time.perf_counter() - t
        # images the CNN saw per photo scanned: 1 is the floor; rotated views and re-embedded stored files add
        figures["cnn_passes_per_photo"] = (embedder.images - before) / max(1, stats.fingerprinted)
        figures["index"] = stats.seconds["index"]
        figures["database"] = stats.seconds["database"]
        figures["db_bytes"] = cfg.db.stat().st_size + sum(
            f.stat().st_size for f in Path(tmp).glob("bench.db*") if f != cfg.db
        )
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("\n| stage | throughput | note |\n|---|---|---|")
    print(f"| decode (draft, EXIF, RGB) | {_rate(n, figures['decode'])} | one core |")
    print(f"| hashes (blake2b, 8 ahash views, colour, sharpness) | {_rate(n, figures['hashes'])} | one core |")
    print(
        f"| embedding (EfficientNet-Lite0, batch {embedder.batch_size}) | {_rate(n, figures['embedding'])} | "
        f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()} |"
    )
    print(f"| index (Hamming + HNSW + verification) | {_rate(n, figures['index'])} | inside the scan |")
    print(f"| database (SQLite writes, regroup) | {_rate(n, figures['database'])} | inside the scan |")
    print(
        f"| **end-to-end scan**, {workers} decode workers | {_rate(n, figures['end_to_end'])} | model load included |"
    )
    print("\n| CNN path (the same photos) | throughput | min cosine to fp32 eager | ready in |")
    print("|---|---|---|---|")
    for name, seconds, cosine, build in cnn:
        print(f"| {name} | {_rate(n, seconds)} | {cosine:.5f} | {build:.1f} s |")
    print(f"(the scan uses: {embedder.path.name})")
    print(
        f"\nCNN passes per photo {figures['cnn_passes_per_photo']:.2f}; peak RSS {figures['peak_rss_mb']:.0f} MB; "
        f"database + index {figures['db_bytes'] / 1e6:.2f} MB"
    )
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "dupwatch-bench-camera")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    run(args.images, args.out, args.workers)


if __name__ == "__main__":
    main()
