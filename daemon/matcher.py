"""Deciding which files are near-duplicates of a new one.

Candidates come from three places: files with the same content hash (exact copies), files whose average or colour
hash lies within a loose Hamming radius of any dihedral view of the new file (cheap, and the only way rotated or
mirrored copies are found without embedding eight views of everything), and the HNSW neighbours of the new file's
embedding (crops, re-encodes and colour edits that move the hashes). A candidate becomes a pair only when the
CNN's cosine similarity clears the threshold and the geometric verification (hashing.geometry) finds the same
photograph, not just the same texture; the hashes never decide on their own. Candidates in the grey zone below
the threshold (rotated by a few tens of degrees, heavily edited) pass on strong geometric agreement alone.

A confirmed pair then gets its tier. It is a `copy` (the same capture, edited) only when the two images, aligned,
cover most of each other and agree in their fine detail except perhaps in one or two compact regions (an overlay);
otherwise it is `similar` (the same scene, another capture: a burst frame where something moved, a stereo pair,
an overlapping crop, a screenshot of the same app with other text). Featureless images (a flat colour, an empty
canvas) pair with nothing but their exact copies: their hashes and embeddings agree with any other flat image.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dupwatch.daemon.config import Config
from dupwatch.daemon.index import EmbeddingIndex
from dupwatch.daemon.records import Tier
from dupwatch.hashing.detail import compare, overlap, texture
from dupwatch.hashing.geometry import aligned_agreement, estimate_affine
from dupwatch.hashing.hamming import HammingIndex
from dupwatch.hashing.perceptual import hamming
from dupwatch.hashing.views import IDENTITY, compose, dihedral, inverse, nearest_view

if TYPE_CHECKING:  # torch is imported only where the CNN runs, not by `status` or `report`
    from dupwatch.hashing.embedder import Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalDetail:
    """What verification needs of a stored file: its CNN local map, its smoothed structure, its detail image."""

    local: np.ndarray
    structure: np.ndarray
    detail: np.ndarray
    texture: float  # hashing.detail.texture of the detail image


ViewCache = dict[int, tuple[np.ndarray, np.ndarray | None]]  # view -> (embedding, local map) of the probe


@dataclass(frozen=True)
class Frame:
    """A file's place among the copies of one capture: the files matched as copies of one another share an
    orientation (`orientation`), and `view` is the dihedral view that turns this file into it. The turn between
    two copies then follows from their frames without comparing them."""

    orientation: int
    view: int

    def turn_to(self, other: Frame) -> int | None:
        """The view of this file that matches `other`'s, or None when the two frames are not related."""
        if other.orientation != self.orientation:
            return None
        return compose(self.view, inverse(other.view))


@dataclass
class Match:
    other: int
    tier: Tier
    hamming: int
    cosine: float
    view: int = IDENTITY  # the view of the new image that the geometry confirmed
    inliers: int | None = None  # local matches that agree on one geometric map (hashing.geometry)
    overlap: float | None = None  # hashing.detail.overlap
    changed: float | None = None  # hashing.detail.DetailMatch
    scattered: float | None = None


@dataclass(frozen=True)
class Verified:
    """Geometric verification of one candidate under one view of the probe."""

    inliers: int
    agreement: float | None  # aligned structure (hashing.geometry.aligned_agreement)
    model: np.ndarray | None  # grid affine map, probe view -> candidate
    theirs: LocalDetail


@dataclass
class Probe:
    """What the matcher needs of an image: its hashes, its embedding, and its pixels for rotated views."""

    ahash_views: tuple[int, ...]
    chash: int
    embedding: np.ndarray
    local: np.ndarray | None = None  # (H, W, C) local descriptors of the upright view
    pixels: np.ndarray | None = None  # CNN input, for the other dihedral views
    structure: np.ndarray | None = None  # smoothed luminance (hashing.geometry.structure) of the upright view
    detail: np.ndarray | None = None  # hashing.detail.detail_image of the upright view
    texture: float | None = None  # hashing.detail.texture of it (computed here when not given)
    frame: Frame | None = None  # set by Matcher.find when it confirms a copy whose frame is known

    def featureless(self, min_texture: float) -> bool:
        if self.texture is None and self.detail is not None:
            self.texture = texture(self.detail)
        return self.texture is not None and self.texture < min_texture


def _true_view(view: int, checked: Verified) -> int:
    """The probe's view that maps it onto the candidate: the view it was compared in, turned further by whatever
    rotation or mirror the geometric map holds (a round picture can match its turned copy in the unturned view)."""
    return view if checked.model is None else compose(view, nearest_view(checked.model[:2, :].T))


class Matcher:
    def __init__(
        self,
        cfg: Config,
        embedder: Embedder,
        index: EmbeddingIndex,
        load_local: Callable[[int], LocalDetail | None] | None = None,
        copies_of: Callable[[int], set[int]] | None = None,
    ) -> None:
        self.cfg = cfg
        # the stored files known to be copies of a file: a candidate among the copies of a copy just confirmed is
        # a copy too (the same capture twice over), without comparing its details again (nor its geometry, when
        # the two files' frames give its turn)
        self.copies_of = copies_of
        # a stored file's (local descriptors, structure), cached or recomputed from disk
        self.load_local = load_local
        self.embedder = embedder
        self.index = index
        self.ahashes = HammingIndex()
        self.chashes = HammingIndex()
        self.ahash_of: dict[int, int] = {}
        # the frames of the files added by this process (files loaded from the store have none: they are
        # verified as before)
        self.frames: dict[int, Frame] = {}
        self._orientations = itertools.count()

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg

    def load_hashes(self, ids: np.ndarray, ahashes: np.ndarray, chashes: np.ndarray) -> None:
        self.ahashes.add_many(ids, ahashes)
        self.chashes.add_many(ids, chashes)
        self.ahash_of.update(zip(ids.tolist(), ahashes.tolist(), strict=True))

    def add(self, file_id: int, probe: Probe) -> None:
        self.index.add(np.array([file_id]), probe.embedding[None, :])
        self.ahashes.add(file_id, probe.ahash_views[0])
        self.chashes.add(file_id, probe.chash)
        self.ahash_of[file_id] = probe.ahash_views[0]
        self.frames[file_id] = probe.frame or Frame(next(self._orientations), IDENTITY)

    def remove(self, file_id: int) -> None:
        self.index.remove(file_id)
        self.ahashes.remove(file_id)
        self.chashes.remove(file_id)
        self.ahash_of.pop(file_id, None)
        self.frames.pop(file_id, None)

    def candidates(self, probe: Probe, exclude: int | None = None) -> dict[int, tuple[int, float | None]]:
        """candidate id -> (the dihedral view that brought it, its cosine when the HNSW search already knows it).
        The view is identity unless only a rotated view's hash was close."""
        cfg = self.cfg
        found: dict[int, tuple[int, int]] = {}  # id -> (hamming distance, view)
        views = range(len(probe.ahash_views)) if cfg.match_rotations else [IDENTITY]
        cap = cfg.max_hash_candidates  # the nearest few only: flat or similar-coloured libraries collide a lot
        for view in views:
            ids, dists = self.ahashes.search(probe.ahash_views[view], cfg.ahash_radius)
            for i, d in zip(ids[:cap].tolist(), dists[:cap].tolist(), strict=True):
                if i not in found or d < found[i][0]:
                    found[i] = (d, view)
        far = (cfg.ahash_radius + 1, IDENTITY)
        for i in self.chashes.search(probe.chash, cfg.chash_radius)[0][:cap].tolist():
            found.setdefault(i, far)  # colour hashes do not change under rotation: no view to learn
        known: dict[int, float] = {}
        for i, sim in zip(*(a.tolist() for a in self.index.query(probe.embedding, cfg.hnsw_k)), strict=True):
            found.setdefault(i, far)
            known[i] = sim
        if exclude is not None:
            found.pop(exclude, None)
        return {i: (v, known.get(i)) for i, (_, v) in found.items() if i in self.index.live}

    def _view(self, probe: Probe, view: int, cache: ViewCache) -> tuple[np.ndarray, np.ndarray | None]:
        """(embedding, local map) of a dihedral view of the probe, computed once per view."""
        if view not in cache:
            if view == IDENTITY or probe.pixels is None:
                cache[view] = (probe.embedding, probe.local)
            else:
                g, loc = self.embedder.embed_with_local(dihedral(probe.pixels, view)[None])
                cache[view] = (g[0], loc[0])
        return cache[view]

    def score(
        self,
        probe: Probe,
        cands: dict[int, tuple[int, float | None]],
        cache: ViewCache | None = None,
        embed_views: bool = True,
    ) -> list[tuple[int, float, int]]:
        """(id, best cosine, view) per candidate: the identity view, or the dihedral view whose hash found it.
        Stored vectors are fetched only for candidates the HNSW search did not already score. Without
        `embed_views`, only views already in `cache` are scored (`find` embeds the others when it needs them)."""
        if not cands:
            return []
        cache = {} if cache is None else cache
        ids = list(cands)
        sims = {i: s for i, (_, s) in cands.items() if s is not None}
        fetch = [i for i in ids if i not in sims or cands[i][0] != IDENTITY]
        vecs = dict(zip(fetch, self.index.vectors(fetch), strict=True)) if fetch else {}
        q = probe.embedding.astype(np.float32)
        for i in fetch:
            sims.setdefault(i, float(vecs[i] @ q))
        if embed_views and probe.pixels is not None:  # every dihedral view that may be needed in one CNN batch
            wanted = sorted({cands[i][0] for i in ids if self._turn_worth_trying(cands[i][0], sims[i])} - set(cache))
            if wanted:
                g, loc = self.embedder.embed_with_local(np.stack([dihedral(probe.pixels, v) for v in wanted]))
                cache.update({v: (g[n], loc[n]) for n, v in enumerate(wanted)})
        out = []
        for fid in ids:
            view = cands[fid][0]
            best, best_view = sims[fid], IDENTITY
            if view != IDENTITY and view in cache:
                rotated = float(vecs[fid] @ cache[view][0])
                if rotated > best:
                    best, best_view = rotated, view
            out.append((fid, min(best, 1.0), best_view))
        out.sort(key=lambda t: -t[1])
        return out

    def _turn_worth_trying(self, view: int, sim: float) -> bool:
        """A candidate that a turned view's hash brought, not alike enough unturned, but alike enough that it may
        be a turned copy: the CNN's features are fairly tolerant to a turn (rotated and mirrored copies score
        0.49-0.99 unturned), while the strangers a turned view's hash brings score ~0.1-0.3. Each view embedded is
        one more CNN pass for the photo."""
        return view != IDENTITY and self.cfg.rotated_min_cosine <= sim < self.cfg.cosine_threshold

    def _turned_cosine(self, probe: Probe, fid: int, view: int, cache: ViewCache) -> float:
        return float(self.index.vectors([fid])[0] @ self._view(probe, view, cache)[0])

    def verify(self, probe: Probe, file_id: int, view: int, cache: ViewCache) -> Verified | None:
        """Geometric verification (hashing.geometry): inliers of the best affine map, and how well the aligned
        images agree; None when either side's details are unavailable."""
        mine = self._view(probe, view, cache)[1] if probe.pixels is not None or view == IDENTITY else None
        theirs = self.load_local(file_id) if self.load_local is not None else None
        if mine is None or theirs is None:
            return None
        n, model = estimate_affine(mine, theirs.local, seed=file_id)
        agreement = None
        if model is not None and probe.structure is not None:
            agreement = aligned_agreement(dihedral(probe.structure, view), theirs.structure, model)
        return Verified(n, agreement, model, theirs)

    def tier(self, probe: Probe, view: int, checked: Verified) -> tuple[Tier | None, Match]:
        """The tier of a geometrically confirmed pair (None: no pair: the other side is featureless) and its
        evidence: a copy covers most of the other image and agrees with it in its details."""
        cfg = self.cfg
        evidence = Match(0, Tier.SIMILAR, 0, 0.0, view, checked.inliers)
        if checked.theirs.texture < cfg.min_texture:
            return None, evidence
        if checked.model is None or probe.detail is None:
            return Tier.SIMILAR, evidence
        evidence.view = _true_view(view, checked)
        evidence.overlap = overlap(checked.model)
        if evidence.overlap < cfg.copy_min_overlap:
            return Tier.SIMILAR, evidence  # they share a minority of the picture: no need to compare its details
        found = compare(dihedral(probe.detail, view), checked.theirs.detail, checked.model)
        evidence.changed, evidence.scattered = found.changed, found.scattered
        copy = found.same_details(cfg.copy_max_changed, cfg.copy_max_scattered)
        return (Tier.COPY if copy else Tier.SIMILAR), evidence

    def find(
        self,
        probe: Probe,
        exclude: int | None = None,
        candidates: dict[int, tuple[int, float | None]] | None = None,
    ) -> list[Match]:
        """Pairs for a new file: cosine over the threshold and geometry agreeing, or a grey-zone cosine with
        geometry agreeing strongly (a rotated or heavily edited copy); each with its tier. A featureless file
        has no pairs here (only exact ones, which the pipeline finds by content). `candidates` (id -> (view,
        cosine if known)) limits the search to those files (a search shows its look-alikes' tiers)."""
        cfg = self.cfg
        if probe.featureless(cfg.min_texture):
            return []
        cache: ViewCache = {}
        matches: list[Match] = []
        copied: set[int] = set()  # known copies of the copies found so far
        grey_checked = 0
        if candidates is None:
            candidates = self.candidates(probe, exclude)
        frame: Frame | None = None  # the probe's, from the first copy confirmed whose frame is known

        def copy_of_copy(fid: int, sim: float, view: int) -> None:
            matches.append(Match(fid, Tier.COPY, self._hamming(probe, fid, view), sim, view))
            if self.copies_of is not None:
                copied.update(self.copies_of(fid))

        for fid, sim, view in self.score(probe, candidates, cache, embed_views=False):
            hash_view = candidates[fid][0]
            turn = self._turn(frame, fid)
            if fid in copied and turn is not None and sim >= cfg.cosine_threshold:
                # a copy of a copy just confirmed, alike enough on its own: the same capture, turned as their
                # frames say; neither geometry nor details are compared again (most pairs of a photo's copies)
                copy_of_copy(fid, sim, turn)
                continue
            if view == IDENTITY and self._turn_worth_trying(hash_view, sim) and probe.pixels is not None:
                if fid in copied and hash_view not in cache:
                    # a copy of a copy just confirmed, turned: the same capture, no CNN pass for its turn (see
                    # below); the turn their frames give, else the one its hash found
                    copy_of_copy(fid, sim, hash_view if turn is None else turn)
                    continue
                turned = self._turned_cosine(probe, fid, hash_view, cache)
                if turned > sim:
                    sim, view = turned, hash_view
            if sim >= cfg.cosine_threshold:
                need = cfg.verify_inliers
            elif sim >= cfg.verify_low and grey_checked < cfg.verify_max_candidates:
                need, grey_checked = cfg.grey_inliers, grey_checked + 1
            else:
                continue
            checked = self.verify(probe, fid, view, cache)
            if not self._agrees(checked, need):
                # alike unturned, yet the geometry disagrees: a turned copy of a picture that looks much the same
                # turned (a clock face, a retina, a plate from above) scores high for the CNN either way; the
                # views whose hash is as close to the candidate's are verified (a CNN pass each, for such a
                # candidate only)
                for other in self._views_as_close(probe, fid, view):
                    again = self.verify(probe, fid, other, cache)
                    if self._agrees(again, need):
                        view, checked = other, again
                        sim = max(sim, self._turned_cosine(probe, fid, view, cache))
                        break
            if checked is None or not self._agrees(checked, need):
                continue
            tier: Tier | None
            if fid in copied:
                tier, m = Tier.COPY, Match(fid, Tier.COPY, 0, sim, _true_view(view, checked), checked.inliers)
            else:
                tier, m = self.tier(probe, view, checked)
                if tier == Tier.SIMILAR:
                    tier, m = self._turned(probe, fid, view, need, cache, (tier, m))
            if tier is not None:
                m.other, m.tier, m.hamming, m.cosine = fid, tier, self._hamming(probe, fid, m.view), sim
                matches.append(m)
                if tier == Tier.COPY:
                    if frame is None and fid in self.frames:  # the geometry's turn onto a copy with a frame
                        theirs = self.frames[fid]
                        frame = Frame(theirs.orientation, compose(m.view, theirs.view))
                    if self.copies_of is not None:
                        copied |= self.copies_of(fid)
        probe.frame = frame
        matches.sort(key=lambda m: -m.cosine)
        return matches

    def _turn(self, frame: Frame | None, fid: int) -> int | None:
        """The probe's view onto a candidate as the frames give it (None when either has none, or they are not
        related)."""
        theirs = self.frames.get(fid)
        return None if frame is None or theirs is None else frame.turn_to(theirs)

    def _agrees(self, checked: Verified | None, need: int) -> bool:
        """Geometry confirms the pair: enough inliers, and the aligned images agree where that can be measured."""
        if checked is None or checked.inliers < need:
            return False
        return checked.agreement is None or checked.agreement >= self.cfg.verify_agreement

    def _views_as_close(self, probe: Probe, fid: int, view: int) -> list[int]:
        """The other views of the probe whose hash is as close to the candidate's as `view`'s and within the hash
        radius, nearest first, at most `turned_views` of them: where a turned copy's geometry can agree."""
        cfg = self.cfg
        if not cfg.match_rotations or probe.pixels is None or fid not in self.ahash_of:
            return []
        theirs = self.ahash_of[fid]
        here = hamming(probe.ahash_views[view], theirs)
        near = sorted(
            (d, v)
            for v in range(len(probe.ahash_views))
            if v != view and (d := hamming(probe.ahash_views[v], theirs)) <= min(here, cfg.ahash_radius)
        )
        return [v for _, v in near[: cfg.turned_views]]

    def _turned(
        self, probe: Probe, fid: int, view: int, need: int, cache: ViewCache, found: tuple[Tier | None, Match]
    ) -> tuple[Tier | None, Match]:
        """A round or symmetric picture (a retina, the moon, a plate seen from above) can line up with its turned
        copy unturned, and then disagree in detail: before settling for `similar`, the views whose hash is as close
        to the candidate's as this view's are verified too, nearest first (each view of the probe is embedded once).
        Only those: a turned copy matches its true view's hash at least as well, while another shot of a scene
        matches no turned view well (each view tried is one more CNN pass)."""
        at_least = max(need, found[1].inliers or 0)  # a turn must agree as well as the view it would replace
        for other in self._views_as_close(probe, fid, view):
            checked = self.verify(probe, fid, other, cache)
            if checked is None or checked.inliers < at_least:
                continue
            tier, m = self.tier(probe, other, checked)
            if tier == Tier.COPY:
                return tier, m
        return found

    def _hamming(self, probe: Probe, fid: int, view: int) -> int:
        return hamming(probe.ahash_views[view], self.ahash_of.get(fid, probe.ahash_views[view]))

    def confirm(self, probe: Probe, hits: list[tuple[int, float, int]]) -> list[Match]:
        """`find` over these look-alikes (id, cosine, view) only: the tiers of what a search shows, without
        verifying every candidate of a large library."""
        return self.find(probe, candidates={fid: (view, sim) for fid, sim, view in hits})

    def lookalikes(self, probe: Probe, k: int) -> list[tuple[int, float, int]]:
        """For `dupwatch query`: the k most similar files whatever the threshold, with the best view's cosine."""
        cands = self.candidates(probe)
        for i, sim in zip(*(a.tolist() for a in self.index.query(probe.embedding, k)), strict=True):
            cands.setdefault(i, (IDENTITY, sim))
        return self.score(probe, cands)[:k]
