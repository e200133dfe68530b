"""Fine detail: once two images are aligned, do they agree in their details, or only in their layout?

hashing.geometry finds that two images share a layout (many local matches agree on one affine map, the smoothed
luminance agrees). That holds for a photo and its edited copy, but also for two chat screenshots of one app, two
filled-in copies of one form, two burst frames in which the subject moved, or a stereo pair. What tells them apart
is the fine detail: text, edges, texture at a scale the CNN and the 28x28 structure do not see.

Each image keeps a square greyscale `detail` image (squashed like the CNN input, so the grid model of
hashing.geometry applies), DETAIL_SIZE on a side, or less for an image with fewer pixels along its shorter side:
an upsampled thumbnail has no fine detail to show. Two images are compared at the smaller of their two sides.
The grid model is refined to sub-pixel precision (Gauss-Newton on an affine map with a gain, robust to an
overlay), both images are band-passed (what survives a re-encode, a resize or a mild blur, and what a different
word changes), and compared block by block. The result says which blocks disagree:
- a copy agrees almost everywhere; an overlay (a caption, a logo, a date stamp) makes one or two compact regions
  disagree;
- a layout-alike or another capture disagrees in many places, or over a large part of the picture.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from dupwatch.hashing.filters import gradient, smooth
from dupwatch.hashing.geometry import GRID, grid_to_pixels

DETAIL_SIZE = 448
MIN_DETAIL_SIZE = 112
BLOCK = 8  # pixels of the detail image per compared block
_TEXTURE_STD = 2.0  # band-passed grey levels: below this a block is flat on both sides (no evidence)
_STRONG = 6.0  # band-passed grey levels of a block with strong detail
_AGREE = 0.15  # correlation of a block's band-passed detail above which it agrees
_MIN_BLOCKS = 30  # fewer comparable blocks: no verdict
_CLEAR_CHANGED = 0.05  # at most this share of the blocks disagree: the alignment is good enough


def detail_side(width: int, height: int) -> int:
    """The side of an image's detail image: what its shorter side holds, within MIN_DETAIL_SIZE..DETAIL_SIZE."""
    return max(MIN_DETAIL_SIZE, min(DETAIL_SIZE, min(width, height)) // BLOCK * BLOCK)


def detail_image(image: Image.Image) -> np.ndarray:
    """The square greyscale image (uint8) that `compare` works on."""
    side = detail_side(*image.size)
    return np.asarray(image.convert("L").resize((side, side), Image.Resampling.BILINEAR), np.uint8)


def _at(a: np.ndarray, side: int) -> np.ndarray:
    if a.shape[0] == side:
        return a.astype(np.float32)
    return np.asarray(Image.fromarray(a).resize((side, side), Image.Resampling.BILINEAR), np.float32)


def _gauss(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, edges repeated."""
    r = max(1, int(3 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    return smooth(a, k)


def band_pass(a: np.ndarray) -> np.ndarray:
    """Detail between ~1.5 and ~5 pixels: strokes of text, edges and fine texture, without the layout's larger
    shapes (which two different screenshots share) or pixel noise."""
    out: np.ndarray = _gauss(a, 0.8) - _gauss(a, 2.0)
    return out


def texture(detail: np.ndarray) -> float:
    """The fraction of blocks with any detail: 0 for a flat colour, a smooth gradient or an empty canvas. Judged
    at half the detail image's resolution (a quarter of the work: it runs for every file)."""
    half = _at(detail, max(MIN_DETAIL_SIZE // 2, detail.shape[0] // 2))
    std = _Blocks(band_pass(half)).std
    return float((std > _TEXTURE_STD).mean())


def _warp(b: np.ndarray, p: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """b sampled on a's pixel grid through the pixel map p (bilinear, edges repeated), and where that sampling fell
    inside b (outside, the sample is 0). The map is PIL's affine convention: output pixel (x, y) samples b at
    p @ (x + 0.5, y + 0.5, 1), pixel centres at +0.5. OpenCV's warp takes an eighth of the time of PIL's, which
    computes every pixel through two function pointers in double precision (values agree within 0.01 grey levels;
    no block verdict changed on 465 recorded comparisons)."""
    w, h = size
    centred = p.astype(np.float64)  # the same map between pixel indices (OpenCV's convention)
    centred[:, 2] += 0.5 * (p[:, 0] + p[:, 1]) - 0.5
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(
        np.ascontiguousarray(b, np.float32), centred, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE
    )
    inside = _inside(p, size, b.shape)
    np.copyto(warped, np.float32(0.0), where=~inside)
    return warped, inside


def _inside(p: np.ndarray, size: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Which output pixels of `_warp` sample inside b (0 <= x < width, 0 <= y < height, as PIL decides), row by
    row: along a row each coordinate is linear in x, so the pixels inside are one run of columns."""
    w, h = size
    first, end = np.zeros(h), np.full(h, float(w))  # per row: the first column inside, and one past the last
    rows = np.arange(h) + 0.5
    for (along, down, offset), limit in ((p[0], shape[1]), (p[1], shape[0])):
        start = down * rows + offset + 0.5 * along  # the coordinate at column 0; it moves by `along` per column
        if along == 0:
            end = np.where((start >= 0) & (start < limit), end, 0.0)
        elif along > 0:  # inside from ceil(-start / along) up to ceil((limit - start) / along)
            first = np.maximum(first, np.ceil(-start / along))
            end = np.minimum(end, np.ceil((limit - start) / along))
        else:
            first = np.maximum(first, np.floor((limit - start) / along) + 1)
            end = np.minimum(end, np.floor(-start / along) + 1)
    # a column is inside when column - first, wrapped around as an unsigned number, is below the run's length: one
    # subtraction and one comparison of small integers (a tenth of the time of two float comparisons and an `and`)
    signed, unsigned = (np.int16, np.uint16) if w < 2**15 else (np.int64, np.uint64)
    first = np.clip(first, 0, w)
    lengths = (np.clip(end, first, w) - first).astype(unsigned)
    offsets = np.subtract(np.arange(w, dtype=signed)[None, :], first.astype(signed)[:, None])
    inside: np.ndarray = offsets.view(unsigned) < lengths[:, None]
    return inside


def _resize(a: np.ndarray, scale: float) -> np.ndarray:
    h, w = max(8, int(a.shape[0] * scale)), max(8, int(a.shape[1] * scale))
    if (h, w) == a.shape:  # PIL would return a copy
        return a.astype(np.float32)
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))


# the refinement's pyramid: (scale, at most this many Gauss-Newton steps); compare checks the verdict before the
# refinement, after the half-scale level and after the full-scale one, so an alignment already good enough at half
# scale is not polished at full scale
_LEVELS = ((0.25, 20), (0.5, 8), (1.0, 3))


def refine(a: np.ndarray, b: np.ndarray, p: np.ndarray, levels: tuple[tuple[float, int], ...] = _LEVELS) -> np.ndarray:
    """The pixel map p (a -> b) refined by Gauss-Newton on smoothed images, coarse to fine, with a gain and offset
    (exposure edits) and residuals beyond a few typical deviations down-weighted (an overlay must not pull the
    alignment)."""
    p = p.astype(np.float64).copy()
    for scale, iterations in levels:
        p = _refine_at(a, b, p, scale, iterations)
    return p


def _gram(rows: np.ndarray) -> np.ndarray:
    """rows @ rows.T (float64) for a few long float32 rows: one dot product per pair, half the time of the
    matrix product, which OpenBLAS computes slowly for so few rows."""
    k = rows.shape[0]
    out = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = np.dot(rows[i], rows[j])
    return out


@functools.lru_cache(maxsize=8)
def _pixel_centres(h: int, w: int) -> np.ndarray:
    """The y and x coordinates of each pixel's centre in an h x w image (float32; read-only, shared)."""
    centres = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    centres.flags.writeable = False
    return centres


def _refine_at(a: np.ndarray, b: np.ndarray, p: np.ndarray, scale: float, iterations: int) -> np.ndarray:
    """One level of `refine`: p (full-scale pixels) improved on a and b resized by `scale`."""
    sa, sb = _gauss(_resize(a, scale), 1.5), _gauss(_resize(b, scale), 1.5)
    h, w = sa.shape
    ps = p.copy()
    ps[:, 2] *= scale
    ys, xs = _pixel_centres(h, w)
    for _ in range(iterations):
        wb, inside = _warp(sb, ps, (w, h))
        n = np.count_nonzero(inside)
        if n < 64:
            break
        try:
            to_b = np.linalg.inv(ps[:, :2])  # image gradients in b's frame from those in a's
        except np.linalg.LinAlgError:
            break
        gy, gx = gradient(wb, 0), gradient(wb, 1)
        # each pass below works in place on the pixels inside: these are large arrays and few operations each
        ea, eb = sa[inside], wb[inside]
        ea -= ea.mean()
        eb -= eb.mean()
        gain = (math.sqrt(float(ea @ ea) / n) + 1e-6) / (math.sqrt(float(eb @ eb) / n) + 1e-6)
        eb *= np.float32(gain)
        e = np.subtract(ea, eb, out=ea)
        size = np.abs(e, out=eb)
        spread = 1.4826 * float(size.mean()) + 1e-3  # ~ a robust deviation, without a median's sort
        size += np.float32(1e-6)
        # the square root of each residual's weight (beyond 3 deviations, less): it multiplies both sides of J
        root = np.sqrt(np.minimum(np.float32(1.0), np.float32(3.0 * spread) / size, out=size), out=size)
        e *= root
        gxa, gya = gx[inside], gy[inside]
        gxa *= root
        gya *= root
        gbx = gxa * np.float32(gain * to_b[0, 0]) + gya * np.float32(gain * to_b[1, 0])
        gby = np.multiply(gxa, np.float32(gain * to_b[0, 1]), out=gxa)
        gby += np.multiply(gya, np.float32(gain * to_b[1, 1]), out=gya)
        x, y = xs[inside], ys[inside]
        # the weighted Jacobian with one row per parameter (contiguous rows: J Jt is one quick product)
        jac = np.empty((6, n), np.float32)
        np.multiply(gbx, x, out=jac[0])
        np.multiply(gbx, y, out=jac[1])
        jac[2] = gbx
        np.multiply(gby, x, out=jac[3])
        np.multiply(gby, y, out=jac[4])
        jac[5] = gby
        step = np.linalg.solve(_gram(jac) + 1e-3 * np.eye(6), (jac @ e).astype(np.float64))
        ps += step.reshape(2, 3)
        if np.abs(step[[0, 1, 3, 4]]).max() * w + np.abs(step[[2, 5]]).max() < 0.1:
            break
    ps[:, 2] /= scale
    return ps


@dataclass(frozen=True)
class DetailMatch:
    """How two aligned images compare in their fine detail."""

    compared: int  # blocks with detail on either side, inside both images
    changed: float  # share of the shared area (blocks inside both images) whose detail disagrees
    scattered: float  # share of the compared blocks that contradict (strong detail on both sides that disagrees)
    # outside the two largest connected regions of contradiction

    def same_details(self, max_changed: float, max_scattered: float) -> bool:
        """A copy: few blocks disagree, and those that do lie in one or two compact regions (an overlay)."""
        return self.compared >= _MIN_BLOCKS and self.changed <= max_changed and self.scattered <= max_scattered


class _Blocks:
    """An image cut into blocks: each block's mean and sum of squared deviations (one side of the block
    correlations, computed once for the comparisons it takes part in). Block means come from OpenCV's area
    resize, which at a whole factor averages each block: a fifth of the time of numpy's per-block passes."""

    def __init__(self, image: np.ndarray) -> None:
        n = image.shape[0] // BLOCK * BLOCK
        self.image = np.ascontiguousarray(image[:n, :n], np.float32)
        self.mean = _block_means(self.image)
        variance = np.maximum(_block_means(self.image * self.image) - self.mean * self.mean, np.float32(0.0))
        self.squares = variance * np.float32(BLOCK * BLOCK)
        self.std = np.sqrt(variance)

    def correlation(self, other: _Blocks) -> np.ndarray:
        """Per block: Pearson correlation."""
        covariance = _block_means(self.image * other.image) - self.mean * other.mean
        products = covariance * np.float32(BLOCK * BLOCK)
        out: np.ndarray = products / np.sqrt(self.squares * other.squares + 1e-6)
        return out


def _block_means(a: np.ndarray) -> np.ndarray:
    """The mean of each whole BLOCK x BLOCK block of a square float32 image (a part block at its edges is left
    out)."""
    n = a.shape[0] // BLOCK
    out: np.ndarray = cv2.resize(a[: n * BLOCK, : n * BLOCK], (n, n), interpolation=cv2.INTER_AREA)
    return out


class _Reference:
    """The band-passed detail of the image compared against (a), in blocks, with its gradients: the same for
    every alignment of b tried against it."""

    def __init__(self, fa: np.ndarray) -> None:
        self.fa = fa
        self.blocks = _Blocks(fa)
        self.gradients = tuple(_Blocks(gradient(fa, axis)) for axis in (0, 1))


def _changes(ref: _Reference, b: np.ndarray, p: np.ndarray) -> DetailMatch:
    """Block verdicts for the band-passed image of `ref` against b warped onto it by the pixel map p."""
    fa = ref.fa
    wb, inside = _warp(b, p, (fa.shape[1], fa.shape[0]))
    fb = band_pass(wb)
    ba, bb = ref.blocks, _Blocks(fb)
    ok = _block_means(inside.astype(np.float32)) >= 0.9  # (NaN-free: outside samples were zeroed)
    sa, sb = ba.std, bb.std
    compared = ok & (np.maximum(sa, sb) > _TEXTURE_STD)
    n = int(compared.sum())
    if n == 0:
        return DetailMatch(0, 1.0, 1.0)
    bad = compared & (ba.correlation(bb) < _AGREE)
    # Each direction of change on its own: other words on the same text line share the line's horizontal bands
    # (which agree) but not the strokes across it (which do not). A contradiction is strong detail on both sides
    # that disagrees, not detail weakened by an edit (a recolour, a blur).
    contradicts = bad & (np.minimum(sa, sb) > _STRONG)
    for axis, da in enumerate(ref.gradients):
        db = _Blocks(gradient(fb, axis))
        strong = np.minimum(da.std, db.std) > _STRONG / 2
        contradicts |= compared & strong & (da.correlation(db) < _AGREE)
    bad |= contradicts
    sizes = sorted(_component_sizes(contradicts), reverse=True)
    # the changed share is of the area, not of the detailed blocks: a caption bar over a photo with a plain sky
    # changes as much of the picture as over a busy one
    return DetailMatch(n, float(bad.sum()) / max(int(ok.sum()), 1), float(sum(sizes[2:])) / n)


def _component_sizes(mask: np.ndarray) -> list[int]:
    """Sizes of the 8-connected regions of a boolean block map."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    sizes: list[int] = stats[1:, cv2.CC_STAT_AREA].tolist()  # row 0 is the background
    return sizes


def _clear(m: DetailMatch) -> bool:
    """So few blocks disagree, none of them scattered, that a finer alignment cannot change the verdict."""
    return m.compared >= _MIN_BLOCKS and m.changed <= _CLEAR_CHANGED and m.scattered == 0.0


def compare(a: np.ndarray, b: np.ndarray, model: np.ndarray) -> DetailMatch:
    """Compare detail images a and b aligned by hashing.geometry's grid `model` (a -> b), at the smaller of their
    sides. The refinement can lose its way (a big overlay, a repeated pattern): the better of the refined and the
    unrefined alignment counts. The alignment is refined only as far as it takes: the grid model as it is, then
    refined to half scale, then to full scale, stopping at the first that agrees clearly (most copies stop
    early; full scale is two thirds of the work)."""
    side = min(a.shape[0], b.shape[0])
    a32, b32 = _at(a, side), _at(b, side)
    p0 = grid_to_pixels(model, side)
    ref = _Reference(band_pass(a32))
    coarse = _changes(ref, b32, p0)
    if _clear(coarse):
        return coarse
    half = refine(a32, b32, p0, _LEVELS[:-1])
    if _clear(found := _changes(ref, b32, half)):
        return found
    fine = _changes(ref, b32, refine(a32, b32, half, _LEVELS[-1:]))
    if fine.changed <= _CLEAR_CHANGED:
        return fine
    return min(coarse, fine, key=lambda m: (m.changed, -m.compared))


def overlap(model: np.ndarray) -> float:
    """The smaller of the two shares of each image that the other covers, under the grid model: 1 for a resize,
    ~0.6 for a 25 % crop, small for two crops that share a corner of one photo."""
    size = 4 * GRID
    corners = np.array([[0, 0], [GRID, 0], [GRID, GRID], [0, GRID]], dtype=np.float64) - 0.5
    mapped = np.hstack([corners, np.ones((4, 1))]) @ model + 0.5
    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).polygon([(float(x) * 4, float(y) * 4) for x, y in mapped], fill=255)
    of_b = float((np.asarray(im) > 127).mean())
    scale = abs(float(np.linalg.det(model[:2, :2])))
    of_a = of_b / scale if scale > 1e-6 else 0.0
    return min(of_b, of_a, 1.0)
