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


def _matrix(view: int) -> np.ndarray:
    """The 2x2 integer map of centred (x, y) pixel coordinates (y down) that dihedral(., view) applies."""
    ys, xs = np.mgrid[-1:2, -1:2]
    src_x, src_y = dihedral(xs, view), dihedral(ys, view)  # at each output position: where it came from
    # output (1, 0) and (0, 1) came from these source points; the map sends source -> output
    inv = np.array([[src_x[1, 2], src_x[2, 1]], [src_y[1, 2], src_y[2, 1]]])
    return np.rint(np.linalg.inv(inv)).astype(int)


_MATRICES = {v: _matrix(v) for v in ALL_VIEWS}


def _product(first: int, then: int) -> int:
    m = _MATRICES[then] @ _MATRICES[first]
    return next(v for v, q in _MATRICES.items() if np.array_equal(q, m))


_PRODUCTS = {(a, b): _product(a, b) for a in ALL_VIEWS for b in ALL_VIEWS}  # the group's table, made once
_INVERSES = {a: b for (a, b), c in _PRODUCTS.items() if c == IDENTITY}


def compose(first: int, then: int) -> int:
    """The view equal to applying `first`, then `then`."""
    return _PRODUCTS[first, then]


def inverse(view: int) -> int:
    """The view that undoes `view`."""
    return _INVERSES[view]


def nearest_view(linear: np.ndarray, tolerance: float = 0.35) -> int:
    """The dihedral view whose map is closest to a 2x2 linear map (scale removed): what a geometric model says
    about rotation and mirroring. IDENTITY when the map is no rotation by a multiple of 90 degrees."""
    scale = np.sqrt(abs(float(np.linalg.det(linear))))
    if scale < 1e-6:
        return IDENTITY
    unit = linear / scale
    errors = {v: float(np.abs(unit - q).max()) for v, q in _MATRICES.items()}
    best = min(errors, key=errors.__getitem__)
    return best if errors[best] <= tolerance else IDENTITY
