"""Search by image: the k indexed photos most like a query image, best first, each with its cosine, its tier when
the matcher confirms it (exact, copy, similar) and the geometric evidence.

One thread owns the CNN and a read-only pipeline over the database (SQLite connections and torch stay in the thread
that made them); before each search the pipeline catches up with what the daemon wrote since, so a photo that just
landed is found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from dupwatch.daemon.config import Config
from dupwatch.daemon.matcher import Match
from dupwatch.daemon.pipeline import Pipeline, open_pipeline
from dupwatch.daemon.records import FileRecord, Tier
from dupwatch.daemon.store import Store
from dupwatch.hashing.embedder import Embedder
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.views import describe

log = logging.getLogger(__name__)

_TIER_ORDER = {Tier.EXACT: 0, Tier.COPY: 1, Tier.SIMILAR: 2, None: 3}


class SearchError(Exception):
    """The query image cannot be used (not an image, unreadable): the reason, for a 400."""


@dataclass
class Hit:
    path: str
    cosine: float
    tier: str | None  # exact / copy / similar; None: a look-alike the matcher did not confirm
    view: str  # the turn or mirror under which it matched
    inliers: int | None  # geometric agreement (local matches on one map)
    overlap: float | None
    changed: float | None
    group: int | None  # its duplicate group
    size: int
    width: int | None
    height: int | None
    content_hash: str | None


class Searcher:
    def __init__(self, cfg: Config, make_embedder: Callable[[], Embedder]) -> None:
        self.cfg = cfg.with_overrides(workers=0)  # the query is decoded here, in this thread
        self._make_embedder = make_embedder
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="dupwatch-search")
        self._store: Store | None = None
        self._pipeline: Pipeline | None = None

    def warm_up(self) -> None:
        """Load the model and the index now, in the search thread, so that the first search is quick."""
        self._thread.submit(self._warm)

    def _warm(self) -> None:
        _, pipeline = self._ready()
        pipeline.embedder.embed(np.zeros((1, 224, 224, 3), np.uint8))  # the network (a lazy one loads here)

    async def search(self, path: str, k: int, exclude: str | None = None) -> list[Hit]:
        return await asyncio.wrap_future(self._thread.submit(self._search, path, k, exclude))

    def close(self) -> None:
        self._thread.submit(self._close).result()
        self._thread.shutdown(wait=True)

    def _ready(self) -> tuple[Store, Pipeline]:
        if self._store is None or self._pipeline is None:
            self._store = Store(self.cfg.db, readonly=True)
            self._pipeline = open_pipeline(self.cfg, self._store, self._make_embedder())
        else:
            self._pipeline.catch_up()
        return self._store, self._pipeline

    def _close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
        if self._store is not None:
            self._store.close()
        self._store = self._pipeline = None

    def _search(self, path: str, k: int, exclude: str | None) -> list[Hit]:
        store, pipeline = self._ready()
        try:
            probe, fp = pipeline.examine(path)
        except DecodeError as e:
            raise SearchError(e.reason) from None
        matcher = pipeline.matcher
        hits = matcher.lookalikes(probe, k + 1)
        looks = {fid: (sim, view) for fid, sim, view in hits}
        confirmed = {m.other: m for m in matcher.confirm(probe, hits)}
        same = {r.id: r for r in store.files.by_content(fp.content_hash)} if fp.content_hash else {}
        recs = store.files.many(set(looks) | set(confirmed) | set(same))
        found = []
        for fid, rec in recs.items():
            if rec.path == exclude:
                continue
            m = confirmed.get(fid)
            sim, view = looks.get(fid, (m.cosine if m else 1.0, 0))
            if m is not None:
                view = m.view  # the turn the geometry confirmed, not only the view the CNN liked best
            tier: Tier | None = m.tier if m else None
            if fid in same or (fp.pixel_hash is not None and rec.pixel_hash == fp.pixel_hash):
                tier = Tier.EXACT
            found.append(_hit(rec, sim, tier, describe(view), m, store.graph.group_of(fid)))
        found.sort(key=lambda h: (_TIER_ORDER[Tier(h.tier) if h.tier else None], -h.cosine, h.path))
        return found[:k]


def _hit(rec: FileRecord, sim: float, tier: Tier | None, view: str, match: Match | None, group: int | None) -> Hit:
    return Hit(
        path=rec.path,
        cosine=round(float(sim), 4),
        tier=None if tier is None else str(tier),
        view=view,
        inliers=match.inliers if match else None,
        overlap=None if match is None or match.overlap is None else round(match.overlap, 3),
        changed=None if match is None or match.changed is None else round(match.changed, 3),
        group=group,
        size=rec.size,
        width=rec.width,
        height=rec.height,
        content_hash=rec.content_hash,
    )
