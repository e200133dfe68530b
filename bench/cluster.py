"""Clustering at library scale: `dupwatch cluster --auto` on stored-like embeddings, timed, with peak memory.

    python -m bench.cluster [--n 100000] [--centres 60] [--k-max 40]

Embeddings are synthetic (unit 1280-d vectors around `centres` random centres, float16 as the store keeps them);
the clustering is daemon.clustering.cluster itself (PCA on a sample, k-means, k by silhouette on a sample). Prints
the time of each part, the chosen k, the adjusted Rand index against the centres, and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from dupwatch.daemon import clustering
from dupwatch.daemon.records import FileRecord, FileStatus


def library(n: int, centres: int, dim: int = 1280, seed: int = 0) -> tuple[list[FileRecord], np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    truth = rng.integers(0, centres, n)
    x = c[truth] + rng.normal(scale=0.9, size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    files = [
        FileRecord(
            id=i + 1,
            path=f"/lib/{i:07d}.jpg",
            size=1,
            mtime_ns=i,
            status=FileStatus.OK,
            embedding=x[i].astype(np.float16),
            sharpness=float(i % 97),
        )
        for i in range(n)
    ]
    return files, truth


def main(argv: list[str] | None = None) -> None:
    from sklearn.metrics import adjusted_rand_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--centres", type=int, default=30)
    ap.add_argument("--k-max", type=int, default=40)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    files, truth = library(args.n, args.centres)
    made = time.perf_counter() - t
    t = time.perf_counter()
    result = clustering.cluster(files, k_max=args.k_max)
    took = time.perf_counter() - t
    ari = adjusted_rand_score(truth, result.labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.n:,} embeddings (made in {made:.1f} s): clustered in {took:.1f} s; k = {result.k} "
        f"(true {args.centres}), adjusted Rand index {ari:.3f}; {result.method}; "
        f"PCA variance kept {result.explained[-1]:.3f}; peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
