"""Geometric verification: do two images show the same photograph, or only the same kind of thing?

A global CNN embedding cannot tell two halves of a lawn, a starfield or a gravel bed apart from one photo and its
re-encode: the textures are the same (cosine 0.85-0.97 on bench/datagen's split scenes). What differs is where
things are. We match the CNN's local descriptors (a 14x14 grid of block-10 features) mutually-nearest, then look
for one affine map that carries many matches onto each other (RANSAC). A crop, rescale, shift or small rotation
of the same photograph gives one such map with many inliers; unrelated pictures give scattered matches.
Repeated patterns (a tray of identical coins) can still fool it: see README's limits.
"""

from __future__ import annotations

import numpy as np

RANSAC_ITERATIONS = 256
INLIER_TOLERANCE = 1.0  # in grid cells (1 cell = 16 px of the 224 px CNN input)
_MIN_AREA_SCALE, _MAX_AREA_SCALE = 0.2, 5.0  # beyond this the "map" is a collapse, not a crop or rescale


def _grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def mutual_matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into the flattened grids) of descriptor pairs that are each other's nearest neighbour."""
    fa = a.reshape(-1, a.shape[-1]).astype(np.float32)
    fb = b.reshape(-1, b.shape[-1]).astype(np.float32)
    sim = fa @ fb.T
    ab = sim.argmax(axis=1)
    ba = sim.argmax(axis=0)
    ia = np.nonzero(ba[ab] == np.arange(len(fa)))[0]
    return ia, ab[ia]


def affine_inliers(a: np.ndarray, b: np.ndarray, seed: int = 0) -> int:
    """Largest number of mutual matches consistent with one affine map; a, b are (H, W, C) unit descriptors."""
    ia, ib = mutual_matches(a, b)
    n = len(ia)
    if n < 3:
        return n
    pa = _grid(*a.shape[:2])[ia]
    pb = _grid(*b.shape[:2])[ib]
    x = np.hstack([pa, np.ones((n, 1))])
    rng = np.random.default_rng(seed)
    picks = np.argpartition(rng.random((RANSAC_ITERATIONS, n)), 2, axis=1)[:, :3]  # 3 distinct matches each
    xs, ys = x[picks], pb[picks]  # (iters, 3, 3), (iters, 3, 2)
    det = np.linalg.det(xs)
    ok = np.abs(det) > 1e-6
    if not ok.any():
        return 0
    models = np.linalg.solve(xs[ok], ys[ok])  # (k, 3, 2): pb ~ [pa, 1] @ M
    area = np.abs(np.linalg.det(models[:, :2, :2]))
    models = models[(area > _MIN_AREA_SCALE) & (area < _MAX_AREA_SCALE)]
    if len(models) == 0:
        return 0
    err = np.linalg.norm(np.matmul(x[None], models) - pb[None], axis=2)
    return int((err < INLIER_TOLERANCE).sum(axis=1).max())
