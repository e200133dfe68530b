"""Geometric verification: do two images show the same photograph, or only the same kind of thing?

A global CNN embedding cannot tell two halves of a lawn, a starfield or a gravel bed apart from one photo and its
re-encode: the textures are the same (cosine 0.85-0.97 on bench/datagen's split scenes). What differs is where
things are. We match the CNN's local descriptors (a 14x14 grid of block-10 features) mutually-nearest, then look
for one affine map that carries many matches onto each other (RANSAC). A crop, rescale, shift or small rotation
of the same photograph gives one such map with many inliers; unrelated pictures give scattered matches. Pictures
that merely share a layout (colour mosaics on one grid) can also produce a consistent map, so once aligned the
two images' smoothed luminance must agree block by block too. Repeated patterns (a tray of identical coins) and
mirror-symmetric scenes can still fool both: see README's limits.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

from dupwatch.hashing.filters import smooth

GRID = 14  # the CNN's local map: 14x14 cells of the 224 px input
RANSAC_ITERATIONS = 256
INLIER_TOLERANCE = 1.0  # in grid cells (1 cell = 16 px of the 224 px CNN input)
STRUCT_SIZE = 28
_MIN_AREA_SCALE, _MAX_AREA_SCALE = 0.2, 5.0  # beyond this the "map" is a collapse, not a crop or rescale


@cache
def _grid(h: int, w: int) -> np.ndarray:
    """The (x, y) of every cell of an h x w grid, row by row (one array per size, read-only)."""
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    grid.flags.writeable = False
    return grid


def mutual_matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into the flattened grids) of descriptor pairs that are each other's nearest neighbour."""
    fa = a.reshape(-1, a.shape[-1]).astype(np.float32)
    fb = b.reshape(-1, b.shape[-1]).astype(np.float32)
    sim = fa @ fb.T
    ab = sim.argmax(axis=1)
    ba = sim.argmax(axis=0)
    ia = np.nonzero(ba[ab] == np.arange(len(fa)))[0]
    return ia, ab[ia]


def estimate_affine(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[int, np.ndarray | None]:
    """The affine map (3x2, grid cells of a -> grid cells of b) that the most mutual matches agree on, refined by
    least squares over its inliers, with the inlier count. a, b are (H, W, C) unit descriptors."""
    ia, ib = mutual_matches(a, b)
    n = len(ia)
    if n < 3:
        return n, None
    pa = _grid(*a.shape[:2])[ia]
    pb = _grid(*b.shape[:2])[ib]
    x = np.hstack([pa, np.ones((n, 1))])
    rng = np.random.default_rng(seed)
    # the first hypotheses alone settle a copy (most matches agree: any sample of three inliers finds the map);
    # only when they leave it open are all of them drawn and scored (the same draws either way: one stream)
    first = _triples(rng, _FIRST_HYPOTHESES, n)
    found = _best_model(x, pb, first)
    if found is None or found[0] < _SETTLED_SHARE * n:
        found = _best_model(x, pb, np.vstack([first, _triples(rng, RANSAC_ITERATIONS - _FIRST_HYPOTHESES, n)]))
    if found is None:
        return 0, None
    count, model, inl = found
    if inl.sum() >= 3:
        model = np.linalg.lstsq(x[inl], pb[inl], rcond=None)[0]
    return count, model


_FIRST_HYPOTHESES = 32
_SETTLED_SHARE = 0.8  # of the mutual matches agreeing on one map


def _triples(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """`count` random triples of distinct indices below n."""
    return np.argpartition(rng.random((count, n)), 2, axis=1)[:, :3]


def _best_model(x: np.ndarray, pb: np.ndarray, picks: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(inliers, model, inlier mask) of the best affine map among those solved from `picks` (triples of
    matches), or None when no triple gives a usable map."""
    xs, ys = x[picks], pb[picks]  # (iters, 3, 3), (iters, 3, 2)
    ok = np.abs(np.linalg.det(xs)) > 1e-6
    if not ok.any():
        return None
    models = np.linalg.solve(xs[ok], ys[ok])  # (k, 3, 2): pb ~ [pa, 1] @ M
    area = np.abs(np.linalg.det(models[:, :2, :2]))
    models = models[(area > _MIN_AREA_SCALE) & (area < _MAX_AREA_SCALE)]
    if len(models) == 0:
        return None
    off = np.matmul(x[None], models) - pb[None]
    inliers = np.einsum("kni,kni->kn", off, off) < INLIER_TOLERANCE**2  # squared distances: no square roots
    counts = inliers.sum(axis=1)
    best = int(counts.argmax())
    return int(counts[best]), models[best], inliers[best]


_KERNEL = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16


def _blur(a: np.ndarray) -> np.ndarray:
    """Separable 5-tap binomial blur, edges repeated."""
    return smooth(a, _KERNEL)


def structure(pixels: np.ndarray) -> np.ndarray:
    """A 28x28 smoothed luminance image: what `aligned_agreement` compares once two images are aligned."""
    im = Image.fromarray(pixels).convert("L").resize((STRUCT_SIZE, STRUCT_SIZE), Image.Resampling.BILINEAR)
    return _blur(np.asarray(im, dtype=np.float32)).astype(np.float32)


def grid_to_pixels(model: np.ndarray, size: int, grid: int = GRID) -> np.ndarray:
    """The 3x2 grid-cell model (cells of a -> cells of b) as a 2x3 pixel map (a's pixel -> b's pixel) for square
    images `size` pixels on a side: the coefficients PIL's affine transform takes, row by row."""
    cell = size / grid
    lin = model[:2, :].T  # rows: output x_b, y_b as functions of x_a, y_a
    off = cell * (model[2, :] - 0.5 * (model[0, :] + model[1, :])) + cell / 2
    return np.hstack([lin, off[:, None]]).astype(np.float64)


def aligned_agreement(a: np.ndarray, b: np.ndarray, model: np.ndarray, grid: int = GRID) -> float | None:
    """Warp b's structure onto a's with the grid-cell affine `model` and correlate them block by block (4x4
    blocks); the median block correlation. The same photograph agrees almost everywhere (0.85-1.0), even under an
    overlay that spoils a few blocks; pictures that only share a layout (mosaics on one grid, screenshots of one
    app) do not (below 0.45 on bench data). None when too few blocks have any contrast to judge by."""
    size = a.shape[0]
    coeffs = tuple(float(c) for c in grid_to_pixels(model, size, grid).ravel())

    def warp(im: Image.Image) -> np.ndarray:
        out = im.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.float32)

    warped = warp(Image.fromarray(b, mode="F"))
    inside = warp(Image.new("F", b.shape[::-1], 1.0)) > 0.999
    step = size // 4

    def blocks(im: np.ndarray) -> np.ndarray:  # (16, step * step): the 4x4 blocks, row by row
        return im[: 4 * step, : 4 * step].reshape(4, step, 4, step).swapaxes(1, 2).reshape(16, step * step)

    m = blocks(inside).astype(np.float64)
    x, y = blocks(a).astype(np.float64), blocks(warped).astype(np.float64)
    count = m.sum(axis=1)
    enough = count >= 0.4 * step * step
    safe = np.maximum(count, 1)
    mx, my = (x * m).sum(axis=1) / safe, (y * m).sum(axis=1) / safe
    dx, dy = (x - mx[:, None]) * m, (y - my[:, None]) * m
    sxx, syy, sxy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1), (dx * dy).sum(axis=1)
    # flat blocks (std < 2 grey levels) are no evidence either way
    textured = (sxx / safe >= 4.0) & (syy / safe >= 4.0)
    use = enough & textured
    if use.sum() < 3:
        return None
    cors = sxy[use] / np.sqrt(sxx[use] * syy[use])
    return float(np.median(cors))
