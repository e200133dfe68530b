"""Separable smoothing with a symmetric kernel, edges repeated: the binomial blur of hashing.geometry's structure
images (28x28, where numpy's passes cost less than a call into OpenCV; hashing.detail's large blurs use OpenCV's)."""

from __future__ import annotations

import numpy as np


def _padded(a: np.ndarray, r: int) -> np.ndarray:
    """`a` (as float32) with r rows and columns of its edge values repeated around it: np.pad's "edge" in half
    its time (its bookkeeping was a tenth of a small blur's)."""
    h, w = a.shape
    p = np.empty((h + 2 * r, w + 2 * r), np.float32)
    p[r : r + h, r : r + w] = a
    p[r : r + h, :r] = a[:, :1]
    p[r : r + h, r + w :] = a[:, -1:]
    p[:r] = p[r]
    p[r + h :] = p[r + h - 1]
    return p


def smooth(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`a` convolved with the odd-length symmetric `kernel` along its rows, then its columns (float32). Each pair
    of taps at the same distance is summed, then weighted once (half the multiplications), in place (no temporary
    per tap).

    Both passes run over the padded image as one flat run of memory: a tap's shift along a row is a shift of the
    flat array by one element, along a column by one padded row. The values between the end of one row and the
    start of the next are sums of nothing useful and are cut off at the end; every kept value is the same sum, in
    the same order, as a row-by-row loop gives, to the last bit, without numpy walking a 2-D view row by row."""
    k = kernel.astype(np.float32, copy=False)
    r = len(k) // 2
    h, w = a.shape
    wide = w + 2 * r
    flat = _padded(a, r).ravel()
    n = flat.size - 2 * r  # the row pass: every padded row, the last one's 2r spare values left out
    rows = np.multiply(flat[r : r + n], k[r])
    pair = np.empty_like(rows)
    for i in range(r):
        np.add(flat[i : i + n], flat[2 * r - i : 2 * r - i + n], out=pair)
        pair *= k[i]
        rows += pair
    m = h * wide - 2 * r  # the column pass: the h output rows, the last one's 2r spare values left out
    out = np.empty(h * wide, np.float32)
    np.multiply(rows[r * wide : r * wide + m], k[r], out=out[:m])
    pair = pair[:m]
    for i in range(r):
        np.add(rows[i * wide : i * wide + m], rows[(2 * r - i) * wide : (2 * r - i) * wide + m], out=pair)
        pair *= k[i]
        out[:m] += pair
    return np.ascontiguousarray(out.reshape(h, wide)[:, :w])
