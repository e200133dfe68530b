"""Deciding which files are near-duplicates of a new one.

Candidates come from three places: files with the same content hash (exact copies), files whose average or colour
hash lies within a loose Hamming radius of any dihedral view of the new file (cheap, and the only way rotated or
mirrored copies are found without embedding eight views of everything), and the HNSW neighbours of the new file's
embedding (crops, re-encodes and colour edits that move the hashes). A candidate becomes a pair only when the
CNN's cosine similarity clears the threshold: the hashes never decide on their own. Candidates in the grey zone
below it get a second opinion from the rotation search on central crops (hashing.geometry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from daemon.config import Config
from daemon.index import EmbeddingIndex
from hashing.embedding import Embedder
from hashing.geometry import central_crop, rotated_crops
from hashing.hamming import HammingIndex
from hashing.perceptual import hamming
from hashing.views import IDENTITY, dihedral

log = logging.getLogger(__name__)


@dataclass
class Match:
    other: int
    kind: str  # "exact" | "near"
    hamming: int
    cosine: float
    view: int = IDENTITY  # the view of the new image that matched
    verified: float | None = None  # central-crop cosine of the rotation search, when that decided


@dataclass
class Probe:
    """What the matcher needs of an image: its hashes, its embedding, and its pixels for rotated views."""

    ahash_views: tuple[int, ...]
    chash: int
    embedding: np.ndarray
    pixels: np.ndarray | None = None


class Matcher:
    def __init__(
        self,
        cfg: Config,
        embedder: Embedder,
        index: EmbeddingIndex,
        load_pixels: Callable[[int], np.ndarray | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.load_pixels = load_pixels  # a stored file's CNN-size pixels, re-read from disk for verification
        self.embedder = embedder
        self.index = index
        self.ahashes = HammingIndex()
        self.chashes = HammingIndex()
        self.ahash_of: dict[int, int] = {}

    def load_hashes(self, ids: np.ndarray, ahashes: np.ndarray, chashes: np.ndarray) -> None:
        self.ahashes.add_many(ids, ahashes)
        self.chashes.add_many(ids, chashes)
        self.ahash_of.update(zip(ids.tolist(), ahashes.tolist()))

    def add(self, file_id: int, probe: Probe) -> None:
        self.index.add(np.array([file_id]), probe.embedding[None, :])
        self.ahashes.add(file_id, probe.ahash_views[0])
        self.chashes.add(file_id, probe.chash)
        self.ahash_of[file_id] = probe.ahash_views[0]

    def remove(self, file_id: int) -> None:
        self.index.remove(file_id)
        self.ahashes.remove(file_id)
        self.chashes.remove(file_id)
        self.ahash_of.pop(file_id, None)

    def candidates(self, probe: Probe, exclude: int | None = None) -> dict[int, int]:
        """candidate id -> the dihedral view that brought it (identity unless only a rotated view was close)."""
        cfg = self.cfg
        found: dict[int, tuple[int, int]] = {}  # id -> (hamming distance, view)
        views = range(len(probe.ahash_views)) if cfg.match_rotations else [IDENTITY]
        for view in views:
            ids, dists = self.ahashes.search(probe.ahash_views[view], cfg.ahash_radius)
            for i, d in zip(ids.tolist(), dists.tolist()):
                if i not in found or d < found[i][0]:
                    found[i] = (d, view)
        far = (cfg.ahash_radius + 1, IDENTITY)
        for i in self.chashes.search(probe.chash, cfg.chash_radius)[0].tolist():
            found.setdefault(i, far)  # colour hashes do not change under rotation: no view to learn
        for i in self.index.query(probe.embedding, cfg.hnsw_k)[0].tolist():
            found.setdefault(i, far)
        found.pop(exclude, None)  # type: ignore[arg-type]
        return {i: v for i, (_, v) in found.items() if i in self.index.live}

    def _view_embedding(self, probe: Probe, view: int, cache: dict[int, np.ndarray]) -> np.ndarray:
        if view not in cache:
            cache[view] = self.embedder.embed(dihedral(probe.pixels, view)[None])[0]  # type: ignore[arg-type]
        return cache[view]

    def score(self, probe: Probe, cands: dict[int, int]) -> list[tuple[int, float, int]]:
        """(id, best cosine, view) per candidate: the identity view, or the dihedral view whose hash found it."""
        if not cands:
            return []
        ids = list(cands)
        vecs = self.index.vectors(ids)
        sims = vecs @ probe.embedding.astype(np.float32)
        cache: dict[int, np.ndarray] = {}
        out = []
        for n, (fid, sim) in enumerate(zip(ids, sims.tolist())):
            view = cands[fid]
            best, best_view = sim, IDENTITY
            if view != IDENTITY and probe.pixels is not None:
                rotated = float(vecs[n] @ self._view_embedding(probe, view, cache))
                if rotated > best:
                    best, best_view = rotated, view
            out.append((fid, min(best, 1.0), best_view))
        out.sort(key=lambda t: -t[1])
        return out

    def verify(self, probe: Probe, file_id: int, cache: dict[str, np.ndarray]) -> float:
        """Rotation search on central crops (hashing.geometry); 0.0 when the candidate cannot be read."""
        if probe.pixels is None or self.load_pixels is None:
            return 0.0
        other = self.load_pixels(file_id)
        if other is None:
            return 0.0
        if "crops" not in cache:
            cache["crops"] = self.embedder.embed(rotated_crops(probe.pixels))
        ref = self.embedder.embed(central_crop(other)[None])[0]
        return float((cache["crops"] @ ref).max())

    def find(self, probe: Probe, exclude: int | None = None) -> list[Match]:
        cfg = self.cfg
        matches: list[Match] = []
        grey: list[tuple[int, float, int]] = []
        for fid, sim, view in self.score(probe, self.candidates(probe, exclude)):
            if sim >= cfg.cosine_threshold:
                matches.append(Match(fid, "near", self._hamming(probe, fid, view), sim, view))
            elif sim >= cfg.verify_low:
                grey.append((fid, sim, view))
        cache: dict[str, np.ndarray] = {}
        for fid, sim, view in grey[: cfg.verify_max_candidates]:
            verified = self.verify(probe, fid, cache)
            if verified >= cfg.verify_threshold:
                matches.append(Match(fid, "near", self._hamming(probe, fid, view), sim, view, verified))
        matches.sort(key=lambda m: -m.cosine)
        return matches

    def _hamming(self, probe: Probe, fid: int, view: int) -> int:
        return hamming(probe.ahash_views[view], self.ahash_of.get(fid, probe.ahash_views[view]))

    def lookalikes(self, probe: Probe, k: int) -> list[tuple[int, float, int]]:
        """For `dupwatch query`: the k most similar files whatever the threshold, with the best view's cosine."""
        cands = dict.fromkeys(self.index.query(probe.embedding, k)[0].tolist(), IDENTITY)
        cands.update({i: v for i, v in self.candidates(probe).items() if i not in cands})
        return self.score(probe, cands)[:k]
