"""The eight dihedral views of an image (rotations by 90 degrees, with and without a mirror).

Users expect a rotated or mirrored copy to count as a duplicate. Rather than embedding eight views of every
image, we hash all eight views (cheap: an 8x8 bit matrix) and embed a view only when its hash finds a candidate.
View v: mirror left-right first when v & 4, then rotate counter-clockwise by 90 degrees (v & 3) times.
"""

from __future__ import annotations

import numpy as np

IDENTITY = 0
ALL_VIEWS: tuple[int, ...] = tuple(range(8))


def dihedral(a: np.ndarray, view: int) -> np.ndarray:
    """View `view` of an array whose first two axes are rows and columns."""
    if view & 4:
        a = a[:, ::-1]
    return np.ascontiguousarray(np.rot90(a, view & 3))


def describe(view: int) -> str:
    rot = (view & 3) * 90
    parts = (["mirror"] if view & 4 else []) + ([f"rot{rot}"] if rot else [])
    return "+".join(parts) or "identity"
