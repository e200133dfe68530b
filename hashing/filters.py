"""Separable smoothing with a symmetric kernel, edges repeated: the Gaussian blurs of hashing.detail and the
binomial blur of hashing.geometry's structure images."""

from __future__ import annotations

import numpy as np


def smooth(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`a` convolved with the odd-length symmetric `kernel` along its rows, then its columns (float32). Each pair
    of taps at the same distance is summed, then weighted once (half the multiplications), in place (no temporary
    per tap)."""
    k = kernel.astype(np.float32, copy=False)
    r = len(k) // 2
    h, w = a.shape
    p = np.pad(a.astype(np.float32, copy=False), r, mode="edge")
    rows = p[:, r : r + w] * k[r]
    pair = np.empty_like(rows)
    for i in range(r):
        np.add(p[:, i : i + w], p[:, 2 * r - i : 2 * r - i + w], out=pair)
        pair *= k[i]
        rows += pair
    out: np.ndarray = rows[r : r + h] * k[r]
    pair = pair[:h]
    for i in range(r):
        np.add(rows[i : i + h], rows[2 * r - i : 2 * r - i + h], out=pair)
        pair *= k[i]
        out += pair
    return out
