"""Fine-detail comparison (hashing.detail) and dihedral view algebra (hashing.views), on real photos and drawn
screenshots: a copy agrees in its details once aligned, a layout-alike does not, a flat picture has no detail."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from bench.lookalikes import chat_screenshot, form
from dupwatch.daemon.demo import load_photo, scale_to
from dupwatch.hashing.detail import (
    _Blocks,
    _component_sizes,
    _gauss,
    _gram,
    _warp,
    compare,
    detail_image,
    overlap,
    texture,
)
from dupwatch.hashing.filters import gradient
from dupwatch.hashing.views import ALL_VIEWS, compose, dihedral, inverse, nearest_view

IDENTITY_MODEL = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # hashing.geometry's grid map: a -> b unchanged


def _jpeg(im: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _detail(im: Image.Image) -> np.ndarray:
    im = im.convert("RGB")
    im.thumbnail((448, 448))
    return detail_image(im)


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return scale_to(load_photo("coffee"), 900)


def test_a_re_encoded_blurred_or_captioned_copy_agrees_in_detail(coffee: Image.Image) -> None:
    a = _detail(coffee)
    captioned = coffee.copy()
    ImageDraw.Draw(captioned).rectangle((0, 520, 900, 600), fill="black")
    for edited in (_jpeg(coffee, 40), coffee.filter(ImageFilter.GaussianBlur(2)), captioned):
        found = compare(a, _detail(edited), IDENTITY_MODEL)
        assert found.same_details(0.22, 0.016), found


def test_a_thumbnail_has_detail_and_is_a_copy_of_its_photo(coffee: Image.Image) -> None:
    """An upsampled thumbnail would look blurred (and a tiny one flat): it is compared at its own resolution."""
    for side in (150, 64):
        thumb = _detail(scale_to(coffee, side))
        assert thumb.shape[0] < 448 and texture(thumb) > 0.2
    found = compare(_detail(coffee), _detail(_jpeg(scale_to(coffee, 150))), IDENTITY_MODEL)
    assert found.same_details(0.22, 0.016), found


def test_a_shifted_frame_agrees_once_the_alignment_is_refined(coffee: Image.Image) -> None:
    """The grid map is only good to a cell (32 px here); the refinement finds the few pixels left over."""
    shifted = Image.fromarray(np.roll(np.asarray(coffee), (5, 7), axis=(0, 1)))
    assert compare(_detail(coffee), _detail(shifted), IDENTITY_MODEL).same_details(0.22, 0.016)


def test_the_alignment_is_refined_only_as_far_as_the_verdict_needs(coffee: Image.Image, monkeypatch) -> None:
    """A re-encode that the grid map already aligns is settled without any refinement, a frame shifted by two
    pixels once refined at half scale (a quarter of the work of full scale). On 394 pairs recorded from four
    sets' scans: the same verdicts as always refining to full scale, in 20 instead of 38 ms a pair."""
    import dupwatch.hashing.detail as detail

    scales: list[float] = []
    real = detail._refine_at

    def counting(a, b, p, scale, iterations):  # type: ignore[no-untyped-def]
        scales.append(scale)
        return real(a, b, p, scale, iterations)

    monkeypatch.setattr(detail, "_refine_at", counting)
    a = _detail(coffee)
    assert compare(a, _detail(_jpeg(coffee, 80)), IDENTITY_MODEL).same_details(0.22, 0.016)
    assert scales == []
    shifted = Image.fromarray(np.roll(np.asarray(coffee), (2, 2), axis=(0, 1)))
    assert compare(a, _detail(shifted), IDENTITY_MODEL).same_details(0.22, 0.016)
    assert 1.0 not in scales and 0.5 in scales


@pytest.mark.parametrize("draw", [chat_screenshot, form])
def test_screenshots_of_one_layout_with_other_text_disagree(draw) -> None:
    rng = random.Random(5)
    one, other = draw(rng), draw(rng)
    found = compare(_detail(one), _detail(other), IDENTITY_MODEL)
    assert not found.same_details(0.22, 0.016), found
    again = compare(_detail(one), _detail(_jpeg(scale_to(one, 500))), IDENTITY_MODEL)
    assert again.same_details(0.22, 0.016), again  # the same screenshot, re-saved small


@pytest.mark.parametrize("sigma", [0.8, 1.5, 2.0])
def test_the_blur_is_a_gaussian_convolution_with_repeated_edges(coffee: Image.Image, sigma: float) -> None:
    """The blur (OpenCV's separable filter) is the same as convolving each row, then each column, with the sampled
    Gaussian over edge-repeated borders (written out here the plain way)."""
    a = np.asarray(coffee.convert("L").resize((120, 90)), np.float32)
    r = max(1, int(3 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a.astype(np.float64), r, mode="edge")
    rows = np.stack([np.convolve(row, k, mode="valid") for row in p])
    want = np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T
    got = _gauss(a, sigma)
    assert got.shape == a.shape and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-3


@pytest.mark.parametrize("shape", [(90, 120), (2, 3), (448, 448)])
def test_the_gradient_is_numpys_bit_for_bit(coffee: Image.Image, shape: tuple[int, int]) -> None:
    """OpenCV's filter gives numpy.gradient's central differences inside and its one-sided ones on the edges,
    the same float32 numbers."""
    photo = np.asarray(coffee.convert("L").resize(shape[::-1]), np.float32) * np.float32(0.37)
    noise = np.random.default_rng(3).normal(0, 1e4, shape).astype(np.float32)
    for a in (photo, noise):
        for axis in (0, 1):
            got = gradient(a, axis)
            assert got.dtype == np.float32
            assert np.array_equal(got, np.gradient(a, axis=axis))


def test_block_statistics_are_each_blocks_deviation_and_correlation(coffee: Image.Image) -> None:
    """The blocks' deviations and correlations (from block means of the image, its square and the product of
    two images) are those of each 8x8 block's pixels, written out here the plain way."""
    a = np.asarray(coffee.convert("L").resize((100, 100)), np.float32)  # 12 blocks a side, 4 pixels left over
    b = np.roll(a, 3, axis=1) * np.float32(0.5) + np.random.default_rng(0).normal(0, 4, a.shape).astype(np.float32)
    ba, bb = _Blocks(a), _Blocks(b)
    assert ba.std.shape == (12, 12)
    want_std = np.zeros((12, 12))
    want_corr = np.zeros((12, 12))
    for i in range(12):
        for j in range(12):
            x = a[8 * i : 8 * i + 8, 8 * j : 8 * j + 8].astype(np.float64).ravel()
            y = b[8 * i : 8 * i + 8, 8 * j : 8 * j + 8].astype(np.float64).ravel()
            want_std[i, j] = x.std()
            want_corr[i, j] = np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else 0.0
    assert np.abs(ba.std - want_std).max() < 1e-3 * max(1.0, want_std.max())
    textured = (want_std > 1) & (bb.std > 1)
    assert textured.sum() > 50
    assert np.abs(ba.correlation(bb) - want_corr)[textured].max() < 1e-3


def test_the_gram_matrix_is_the_rows_products() -> None:
    rows = np.random.default_rng(1).normal(0, 3, (6, 5000)).astype(np.float32)
    want = rows.astype(np.float64) @ rows.T.astype(np.float64)
    got = _gram(rows)
    assert got.dtype == np.float64 and np.array_equal(got, got.T)
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_flat_pictures_have_no_texture_and_photos_do(coffee: Image.Image) -> None:
    for flat in (Image.new("RGB", (640, 480), c) for c in ("black", "white", (200, 30, 30))):
        assert texture(_detail(flat)) == 0.0
    dots = Image.new("RGB", (800, 600), "white")
    ImageDraw.Draw(dots).rectangle((100, 100, 104, 104), fill="black")
    assert texture(_detail(dots)) < 0.01
    assert texture(_detail(coffee)) > 0.3


def test_overlap_of_a_resize_a_crop_and_far_apart_crops() -> None:
    assert overlap(IDENTITY_MODEL) == pytest.approx(1.0, abs=0.02)
    crop = np.array([[1 / 0.75, 0.0], [0.0, 1 / 0.75], [-1.0, -1.0]])  # b shows 75 % of a's sides
    assert 0.5 < overlap(crop) < 0.6
    apart = np.array([[1.0, 0.0], [0.0, 1.0], [-11.0, 0.0]])  # b starts where a's last 3 columns are
    assert overlap(apart) < 0.25


def test_blocks_of_contradiction_that_touch_at_a_corner_are_one_region() -> None:
    mask = np.zeros((6, 7), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal: one region of 3 (8-connected)
    mask[4:6, 4:7] = True  # a 2x3 patch touching the border: 6
    mask[0, 6] = True  # on its own: 1
    assert sorted(_component_sizes(mask)) == [1, 3, 6]
    assert _component_sizes(np.zeros((5, 5), dtype=bool)) == []


def test_views_compose_like_the_arrays_they_transform() -> None:
    a = np.arange(12).reshape(3, 4)
    for v in ALL_VIEWS:
        for w in ALL_VIEWS:
            assert np.array_equal(dihedral(dihedral(a, v), w), dihedral(a, compose(v, w)))
        assert np.array_equal(dihedral(dihedral(a, v), inverse(v)), a)


def test_a_rotation_in_a_grid_map_is_read_as_its_view() -> None:
    """Where the descriptors of view v of an image land in the image itself: the map's linear part."""
    grid = np.stack(np.meshgrid(np.arange(14.0), np.arange(14.0)), axis=-1)  # (y, x) -> (x, y)
    for v in ALL_VIEWS:
        moved = dihedral(grid, v).reshape(-1, 2) - 6.5  # at each position of the view: where it came from
        here = grid.reshape(-1, 2) - 6.5
        linear = np.linalg.lstsq(here, moved, rcond=None)[0].T  # view position -> original position
        assert compose(v, nearest_view(linear)) == 0, v


@pytest.mark.parametrize(
    "p",
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # as is
        [[0.8, 0.05, 30.3], [-0.04, 0.82, 11.7]],  # a crop, slightly turned
        [[1.3, 0.0, -40.0], [0.0, 1.25, -25.5]],  # an enlargement: much of it falls outside
        [[-1.0, 0.0, 200.0], [0.0, 1.0, 0.0]],  # mirrored
        [[0.0, -1.0, 180.0], [1.0, 0.0, -7.2]],  # a quarter turn
        [[0.9, 0.31, -149.7], [-0.21, 1.1, 40.3]],  # turned and shifted: on 20 rows nothing is inside
        [[1.0, 0.0, 500.0], [0.0, 1.0, 0.0], "outside"],  # b lies wholly to the right
    ],
)
def test_the_warp_samples_like_pils_affine_transform(p: list) -> None:
    """`_warp` (OpenCV's, 8x faster) keeps PIL's meaning of the map and of "inside": output pixel (x, y) samples
    b at p @ (x + 0.5, y + 0.5, 1) when that point lies within b, bilinearly, edges repeated."""
    rng = np.random.default_rng(5)
    b = (rng.random((180, 200)) * 255).astype(np.float32)
    pm = np.array(p[:2])
    coeffs = tuple(float(c) for c in pm.ravel())
    ref = Image.fromarray(b, mode="F").transform(
        (160, 150), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=float("nan")
    )
    expected = np.asarray(ref, np.float32)
    warped, inside = _warp(b, pm, (160, 150))
    assert np.array_equal(inside, ~np.isnan(expected))
    assert inside.any() == ("outside" not in p)
    assert np.abs(warped[inside] - expected[inside]).max(initial=0.0) < 0.01
    assert not warped[~inside].any()
