"""Perceptual hashes as ints, their SQLite round trip, dihedral views, and the numpy Hamming search."""

from __future__ import annotations

import random
import sqlite3

import imagehash
import numpy as np
from PIL import Image, ImageOps

from dupwatch.daemon.demo import load_photo
from dupwatch.hashing.hamming import HammingIndex
from dupwatch.hashing.perceptual import (
    COLOR_BINBITS,
    average_hash,
    average_hash_views,
    bits_to_int,
    colour_hash,
    from_signed64,
    hamming,
    to_signed64,
)
from dupwatch.hashing.views import dihedral


def test_64_bit_hashes_round_trip_through_sqlite() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE h (v INTEGER)")
    values = [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0xF0F0F0F0F0F0F0F0]
    db.executemany("INSERT INTO h VALUES (?)", [(to_signed64(v),) for v in values])
    back = [from_signed64(r[0]) for r in db.execute("SELECT v FROM h")]
    assert back == values


def test_hash_views_match_hashes_of_rotated_and_mirrored_images() -> None:
    im = load_photo("astronaut").resize((256, 256))
    views = average_hash_views(im)
    assert views[0] == average_hash(im)
    transforms = {
        1: lambda i: i.transpose(Image.Transpose.ROTATE_90),
        2: lambda i: i.transpose(Image.Transpose.ROTATE_180),
        3: lambda i: i.transpose(Image.Transpose.ROTATE_270),
        4: ImageOps.mirror,
    }
    for view, fn in transforms.items():
        assert hamming(views[view], average_hash(fn(im))) <= 2, view
    arr = np.arange(12).reshape(3, 4)
    assert np.array_equal(dihedral(arr, 1), np.rot90(arr))
    assert np.array_equal(dihedral(arr, 4), arr[:, ::-1])


def test_colour_hash_is_an_int_that_separates_colour_from_grey() -> None:
    im = load_photo("coffee")
    assert isinstance(colour_hash(im), int)
    assert hamming(colour_hash(im), colour_hash(im.convert("L").convert("RGB"))) > 3


def test_colour_hash_is_imagehash_colorhash_bit_for_bit() -> None:
    """Stored colour hashes made by imagehash (and by earlier dupwatch) must compare with new ones: the same bits
    on photos, noise, flat colours of every mode, and pixels at each bin's edge (saturation 85 and 170, which
    imagehash counts in neither colour bin, and the hue bins' edges)."""
    rng = np.random.default_rng(5)
    images = [load_photo(name) for name in ("coffee", "astronaut", "chelsea", "rocket")]
    images += [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in rng.integers(1, 50, (40, 2))
    ]
    images += [
        Image.new("RGB", (7, 5), c).convert(m)
        for c in ((0, 0, 0), (31, 31, 31), (255, 0, 0))
        for m in ["L", "P", "RGBA", "RGB"]
    ]
    grid = np.stack(np.meshgrid(np.array([0, 60, 128, 200, 255]), np.arange(256), np.arange(256), indexing="ij"), -1)
    colours = grid.reshape(-1, 3).astype(np.uint8)
    hsv = np.asarray(Image.fromarray(colours[None]).convert("HSV"))[0]
    for sat in (84, 85, 86, 169, 170, 171):
        for hue in (None, 42, 43, 85, 127, 128, 170, 212, 213, 255):
            at = (hsv[:, 1] == sat) & (hsv[:, 0] == hue if hue is not None else True)
            picked = colours[at][:300]
            if len(picked):
                mixed = np.concatenate([picked, colours[rng.integers(0, len(colours), int(rng.integers(0, 300)))]])
                images.append(Image.fromarray(mixed[None]))
    assert len(images) > 100
    for im in images:
        assert colour_hash(im) == bits_to_int(imagehash.colorhash(im, binbits=COLOR_BINBITS).hash)


def test_hamming_index_agrees_with_brute_force_and_supports_removal() -> None:
    rng = random.Random(1)
    values = {i: rng.getrandbits(64) for i in range(5000)}
    idx = HammingIndex()
    idx.add_many(np.array(list(values)), np.array(list(values.values()), dtype=np.uint64))
    query = values[42] ^ 0b1011  # 3 bits away from item 42
    ids, dists = idx.search(query, 10)
    expected = sorted((hamming(v, query), i) for i, v in values.items() if hamming(v, query) <= 10)
    assert sorted(zip(dists.tolist(), ids.tolist(), strict=True)) == expected
    assert ids[0] == 42 and dists[0] == 3
    idx.remove(42)
    assert 42 not in idx.search(query, 10)[0]
    idx.add(9999, query)
    assert idx.search(query, 0)[0].tolist() == [9999]
    assert len(idx) == 5000
