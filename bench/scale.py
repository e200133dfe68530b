"""Scale: N synthetic fingerprints and embeddings in the real store and index.

    python -m bench.scale [--n 1000000] [--dir DIR]

Embeddings are clustered (10,000 random centres plus noise, unit length, 1280-d) rather than uniform, which is
closer to a photo library; hashes are random 64-bit values. Figures: database insert rate and size, Hamming query
time over all N hashes, index build (= rebuild from the database) time, index file size, load time with its
checksum, HNSW query p50/p95 (k=16), and peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dupwatch.daemon.config import Config
from dupwatch.daemon.index import EmbeddingIndex, IndexParams, rebuild_index
from dupwatch.daemon.records import FileRow, FileStatus
from dupwatch.daemon.store import Store
from dupwatch.hashing.hamming import HammingIndex

DIM = 1280


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kb = lambda k: float(fields[k].split()[0]) / 1024  # noqa: E731
    return kb("VmRSS"), kb("VmHWM")


def _embeddings(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    # the noise is half as long as a centre: points of one cluster are alike, clusters are apart
    v = centres[rng.integers(0, len(centres), n)] + (0.5 / np.sqrt(DIM)) * rng.standard_normal((n, DIM)).astype(
        np.float32
    )
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)
    return out


def run(n: int, workdir: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10_000, DIM)).astype(np.float32) / np.sqrt(DIM)
    cfg = Config(db=workdir / "scale.db")
    store = Store(cfg.db)
    figures: dict[str, float] = {"n": n}

    t = time.perf_counter()
    chunk = 20_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        embs = _embeddings(m, rng, centres)
        ahashes = rng.integers(0, 2**63, m, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
        chashes = rng.integers(0, 2**42, m, dtype=np.int64)
        with store.atomic():
            gen = store.next_gen()
            for i in range(m):
                rec = FileRow(
                    path=f"/photos/{(start + i) // 1000:04d}/IMG_{start + i:07d}.jpg",
                    size=4_000_000,
                    mtime_ns=1,
                    status=FileStatus.OK,
                    content_hash=f"{start + i:032x}",
                    width=4032,
                    height=3024,
                    format="JPEG",
                    ahash=int(ahashes[i]),
                    chash=int(chashes[i]),
                    sharpness=100.0,
                    exif_fields=20,
                    embedding=embs[i],
                )
                store.files.save(rec, gen)
    figures["db_insert_s"] = time.perf_counter() - t
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    figures["db_mb"] = sum(f.stat().st_size for f in workdir.glob("scale.db*")) / 1e6

    t = time.perf_counter()
    hidx = HammingIndex()
    ids, ah, _ = store.files.live_hashes()
    hidx.add_many(ids, ah)
    figures["hamming_load_s"] = time.perf_counter() - t
    queries = ah[rng.integers(0, len(ah), 100)]
    t = time.perf_counter()
    for q in queries.tolist():
        hidx.search(q ^ 0b101, 12)
    figures["hamming_query_ms"] = (time.perf_counter() - t) / len(queries) * 1000

    params = IndexParams(
        dim=DIM, model="scale-bench", m=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction, ef=cfg.hnsw_ef
    )
    t = time.perf_counter()
    index = rebuild_index(store.files, store.gen, params)
    figures["index_build_s"] = time.perf_counter() - t
    figures["rss_after_build_mb"] = _rss_mb()[0]
    t = time.perf_counter()
    index.save(cfg.index_path)
    figures["index_save_s"] = time.perf_counter() - t
    figures["index_mb"] = cfg.index_path.stat().st_size / 1e6

    probes = _embeddings(1000, rng, centres).astype(np.float32)
    lat = []
    for q in probes:
        t = time.perf_counter()
        index.query(q, 16)
        lat.append(time.perf_counter() - t)
    figures["hnsw_p50_ms"] = float(np.percentile(lat, 50) * 1000)
    figures["hnsw_p95_ms"] = float(np.percentile(lat, 95) * 1000)
    # recall@10 of the approximate search against exact search over every stored embedding (one pass over the DB)
    qs = probes[:100]
    best_ids = np.full((len(qs), 10), -1, dtype=np.int64)
    best_sims = np.full((len(qs), 10), -np.inf, dtype=np.float32)
    for ids_chunk, vecs in store.files.live_embeddings():
        sims = qs @ vecs.T
        all_sims = np.concatenate([best_sims, sims], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids_chunk, sims.shape)], axis=1)
        top = np.argsort(-all_sims, axis=1)[:, :10]
        best_sims = np.take_along_axis(all_sims, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    hits = sum(len(set(best_ids[i].tolist()) & set(index.query(q, 10)[0].tolist())) for i, q in enumerate(qs))
    figures["hnsw_recall_at_10"] = hits / (10 * len(qs))
    del index

    t = time.perf_counter()
    EmbeddingIndex.load(cfg.index_path, params)
    figures["index_load_s"] = time.perf_counter() - t
    figures["peak_rss_mb"] = _rss_mb()[1]
    return figures


def table(f: dict[str, float]) -> str:
    n = int(f["n"])
    rows = [
        ("fingerprints + embeddings", f"{n:,}"),
        ("database insert", f"{f['db_insert_s']:.0f} s ({n / f['db_insert_s']:,.0f} files/s)"),
        ("database size", f"{f['db_mb']:,.0f} MB"),
        ("Hamming index load from the database", f"{f['hamming_load_s']:.1f} s"),
        ("Hamming query over all hashes (radius 12)", f"{f['hamming_query_ms']:.2f} ms"),
        ("HNSW build = rebuild from the database", f"{f['index_build_s']:.0f} s ({n / f['index_build_s']:,.0f}/s)"),
        ("HNSW index file", f"{f['index_mb']:,.0f} MB (save {f['index_save_s']:.1f} s)"),
        ("HNSW load with checksum", f"{f['index_load_s']:.1f} s"),
        ("HNSW query k=16, p50 / p95", f"{f['hnsw_p50_ms']:.2f} / {f['hnsw_p95_ms']:.2f} ms"),
        ("HNSW recall@10 vs exact search (100 queries)", f"{f['hnsw_recall_at_10']:.3f}"),
        ("resident memory after build / peak", f"{f['rss_after_build_mb']:,.0f} / {f['peak_rss_mb']:,.0f} MB"),
    ]
    return "| scale figure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="where the database and index go (default: a temporary folder)")
    args = ap.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        print(table(run(args.n, args.dir)))
    else:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
            print(table(run(args.n, Path(tmp))))


if __name__ == "__main__":
    main()
