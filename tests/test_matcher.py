"""The matching decisions, on small hand-made fingerprints (no CNN, no images): which candidates are looked at, and
which become pairs. Local descriptors are random unit vectors on the 14x14 grid; a "copy" is the same grid shifted
by one cell, with its smoothed luminance shifted to match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dupwatch.daemon.config import Config
from dupwatch.daemon.index import EmbeddingIndex, IndexParams
from dupwatch.daemon.matcher import LocalDetail, Matcher, Probe
from dupwatch.daemon.records import Tier
from dupwatch.hashing.detail import DETAIL_SIZE
from dupwatch.hashing.embedding import tiny_embedder
from dupwatch.hashing.geometry import _blur

DIM = 8
GRID = 14


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _vector(cosine: float) -> np.ndarray:
    """A unit vector whose cosine with e0 is `cosine`."""
    v = np.zeros(DIM, np.float32)
    v[0], v[1] = cosine, np.sqrt(1 - cosine**2)
    return v


Scene = tuple[np.ndarray, np.ndarray, np.ndarray]
CELL = DETAIL_SIZE // GRID  # detail-image pixels per grid cell


def _scene(seed: int) -> Scene:
    """Descriptors one cell wider than the grid, a smooth luminance image two pixels wider than 28x28, and a
    textured detail image one cell wider than DETAIL_SIZE."""
    rng = np.random.default_rng(seed)
    desc = _unit(rng.normal(size=(GRID, GRID + 1, 64)))
    lum = rng.normal(size=(28, 30)).astype(np.float32)
    for _ in range(3):
        lum = _blur(lum)
    lum = 128 + 60 * (lum - lum.mean()) / lum.std()
    fine = _blur(rng.normal(size=(DETAIL_SIZE, DETAIL_SIZE + CELL)).astype(np.float32))
    detail = np.clip(128 + 40 * fine / fine.std(), 0, 255).astype(np.uint8)
    return desc, lum.astype(np.float32), detail


def _left(scene: Scene) -> LocalDetail:
    return LocalDetail(scene[0][:, :GRID], scene[1][:, :28], scene[2][:, :DETAIL_SIZE], 1.0)


def _right(scene: Scene, keep: int | None = None, seed: int = 99) -> LocalDetail:
    """The same scene one cell (two pixels of the structure) to the right; with `keep`, only that many cells keep
    their descriptor (the others are replaced by random ones): weaker geometric evidence for the same map."""
    desc, lum = scene[0][:, 1:].copy(), scene[1][:, 2:]
    if keep is not None:
        rng = np.random.default_rng(seed)
        replace = rng.permutation(GRID * GRID)[keep:]
        flat = desc.reshape(-1, desc.shape[-1])
        flat[replace] = _unit(rng.normal(size=(len(replace), desc.shape[-1])))
    return LocalDetail(desc, lum, np.ascontiguousarray(scene[2][:, CELL:]), 1.0)


class Library:
    """Stored files: their embeddings in the index, hashes in the Hamming index, local details on demand."""

    def __init__(self, cfg: Config) -> None:
        self.index = EmbeddingIndex(IndexParams(dim=DIM, model="test"))
        self.details: dict[int, LocalDetail | None] = {}
        self.matcher = Matcher(cfg, tiny_embedder(), self.index, self.details.get)

    def add(self, fid: int, cosine: float, detail: LocalDetail | None, ahash: int = 0, chash: int = 0xFFFF) -> None:
        self.details[fid] = detail
        self.matcher.add(fid, Probe((ahash,) * 8, chash, _vector(cosine)))


def _probe(detail: LocalDetail, ahash: int = 0, chash: int = 0) -> Probe:
    return Probe(
        (ahash,) * 8, chash, _vector(1.0), local=detail.local, structure=detail.structure, detail=detail.detail
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config(db=tmp_path / "m.db", workers=0)


def test_a_similar_embedding_with_agreeing_geometry_is_a_pair(cfg: Config) -> None:
    scene = _scene(1)
    lib = Library(cfg)
    lib.add(7, 0.95, _right(scene))
    [m] = lib.matcher.find(_probe(_left(scene)))
    assert (m.other, m.tier, m.view) == (7, Tier.COPY, 0)
    assert m.inliers is not None and m.inliers > 150  # 13 x 14 cells overlap
    assert m.cosine == pytest.approx(0.95, abs=1e-3)


def test_the_same_texture_elsewhere_is_not_a_pair(cfg: Config) -> None:
    """Two halves of a lawn: the embeddings agree, the local descriptors do not line up."""
    lib = Library(cfg)
    lib.add(7, 0.97, _left(_scene(2)))
    assert lib.matcher.find(_probe(_left(_scene(1)))) == []


def test_the_same_layout_with_other_content_is_not_a_pair(cfg: Config) -> None:
    """The descriptors line up (same layout) but once aligned the luminance does not agree."""
    scene, other = _scene(1), _scene(3)
    lib = Library(cfg)
    lib.add(7, 0.97, LocalDetail(_right(scene).local, _right(other).structure, _right(other).detail, 1.0))
    assert lib.matcher.find(_probe(_left(scene))) == []


def test_the_grey_zone_needs_stronger_geometry(cfg: Config) -> None:
    scene = _scene(4)
    weak = _right(scene, keep=32)  # enough agreeing cells for a confident cosine, not for a grey-zone one
    for cosine, found in ((0.9, True), (0.6, False)):
        lib = Library(cfg)
        lib.add(7, cosine, weak)
        assert bool(lib.matcher.find(_probe(_left(scene)))) is found, cosine
    lib = Library(cfg)
    lib.add(7, 0.6, _right(scene))  # strong geometry: the grey zone confirms
    [m] = lib.matcher.find(_probe(_left(scene)))
    assert m.inliers is not None and m.inliers >= cfg.grey_inliers


def test_below_the_grey_zone_nothing_is_verified(cfg: Config) -> None:
    scene = _scene(5)
    lib = Library(cfg)
    lib.add(7, 0.4, _right(scene))
    assert lib.matcher.find(_probe(_left(scene))) == []


def test_no_pair_without_the_stored_details(cfg: Config) -> None:
    """A stored file that is gone or changed on disk (its details are None) never becomes a pair."""
    scene = _scene(6)
    lib = Library(cfg)
    lib.add(7, 0.99, None)
    assert lib.matcher.find(_probe(_left(scene))) == []


def test_thresholds_follow_a_reloaded_config(cfg: Config) -> None:
    scene = _scene(7)
    lib = Library(cfg)
    lib.add(7, 0.85, _right(scene))
    assert len(lib.matcher.find(_probe(_left(scene)))) == 1
    lib.matcher.reconfigure(cfg.with_overrides(cosine_threshold=0.9, verify_low=0.88))
    assert lib.matcher.find(_probe(_left(scene))) == []


def test_candidates_come_from_hashes_and_the_index_nearest_first(cfg: Config) -> None:
    cfg = cfg.with_overrides(hnsw_k=1, max_hash_candidates=2, ahash_radius=4, chash_radius=1)
    lib = Library(cfg)
    lib.add(1, 0.99, None, ahash=0b1111_0000)  # nearest embedding
    lib.add(2, 0.10, None, ahash=0b0000_0001)  # 1 bit from the probe's average hash
    lib.add(3, 0.10, None, ahash=0b0000_0011)  # 2 bits
    lib.add(4, 0.10, None, ahash=0b0000_0111)  # 3 bits: within the radius, but only the nearest 2 are kept
    lib.add(5, 0.10, None, ahash=0b1111_1111, chash=0b1)  # colour hash 1 bit away
    lib.add(6, 0.10, None, ahash=0b1111_1111, chash=0xFFFF)  # nothing close
    probe = Probe((0,) * 8, 0, _vector(1.0))
    found = lib.matcher.candidates(probe, exclude=2)
    assert set(found) == {1, 3, 5}  # 2 is the file itself
    assert found[1][1] == pytest.approx(0.99, abs=1e-3)  # the index already scored it
    assert found[3] == (0, None)


def test_a_rotated_view_of_the_hash_brings_its_candidate_with_that_view(cfg: Config) -> None:
    lib = Library(cfg.with_overrides(hnsw_k=1))
    lib.add(1, 0.99, None, ahash=(1 << 64) - 1)  # only the HNSW neighbour
    lib.add(2, 0.10, None, ahash=0xABCDEF)
    views = (0xFFFF_0000_0000,) * 3 + (0xABCDEF,) + (0xFFFF_0000_0000,) * 4  # view 3 (rot270) hashes like file 2
    found = lib.matcher.candidates(Probe(views, 0, _vector(1.0)))
    assert found[2] == (3, None)
    lib.matcher.reconfigure(lib.matcher.cfg.with_overrides(match_rotations=False))
    assert 2 not in lib.matcher.candidates(Probe(views, 0, _vector(1.0)))
