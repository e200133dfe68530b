"""Geometric verification on its own: the affine map between a photo and its crop, and aligned agreement."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dupwatch.daemon.demo import load_photo
from dupwatch.hashing.geometry import aligned_agreement, estimate_affine, structure


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))


def test_a_crop_is_found_as_one_affine_map_and_agrees_once_aligned(embedder) -> None:
    photo = load_photo("astronaut")  # 512x512
    w, h = photo.size
    crop = photo.crop((64, 32, w, h))  # 12.5 % off the left, 6.25 % off the top
    other = load_photo("coffee")
    px = [_pixels(photo), _pixels(crop), _pixels(other)]
    _, local = embedder.embed_with_local(np.stack(px))
    n, model = estimate_affine(local[1], local[0], seed=0)  # crop cells -> photo cells
    assert n >= 25 and model is not None
    # a crop cell (x, y) sits at 64/512*14 + x * (448/512) cells in the photo: scale ~0.875, shift ~1.75 cells
    assert abs(model[0, 0] - 0.875) < 0.12 and abs(model[2, 0] - (1.75 - 0.5 + 0.5 * 0.875)) < 1.0
    agree = aligned_agreement(structure(px[1]), structure(px[0]), model)
    assert agree is not None and agree > 0.8
    n_other, model_other = estimate_affine(local[2], local[0], seed=0)
    assert n_other < 25
    if model_other is not None:
        other_agree = aligned_agreement(structure(px[2]), structure(px[0]), model_other)
        assert other_agree is None or other_agree < 0.45
