"""Sorting a library by what it shows: clusters of the stored embeddings, and bursts (photos taken moments apart
that look alike), each with its best shot.

The embeddings are already in the store: nothing is decoded again. They are reduced by PCA (fitted on a sample, at
most MAX_DIMS components; the cumulative explained variance is reported) and clustered by k-means (scikit-learn's
MiniBatchKMeans: bounded memory for 100 k photos). With no k given, k is chosen by the silhouette coefficient of
each k from 2 to `k_max`, computed on a sample: the k whose clusters are the most separated relative to their
spread. Silhouette rather than BIC: k-means' BIC assumes spherical clusters of equal variance, which CNN embeddings
of photo bursts are not, and it keeps rewarding splits of large bursts; silhouette compares each photo's distance to
its own cluster with the nearest other one, which is what "a burst" means here. Everything is seeded: the same
database gives the same clusters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dupwatch.daemon.files import is_under
from dupwatch.daemon.keeper import KeeperPolicy, capture_time, choose
from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.daemon.store import Store

log = logging.getLogger(__name__)

MAX_DIMS = 50
PCA_SAMPLE = 20_000
SILHOUETTE_SAMPLE = 4_000


@dataclass
class Cluster:
    id: int
    members: list[FileRecord]
    best: FileRecord
    best_reason: str
    centre: np.ndarray  # in the PCA space


@dataclass
class Clustering:
    method: str
    k: int
    clusters: list[Cluster]
    coords: np.ndarray  # (n, dims) PCA coordinates of every clustered file, in `files` order
    files: list[FileRecord]
    labels: np.ndarray  # cluster index (0-based, into `clusters`) per file; -1: in a cluster below min_size
    explained: list[float] = field(default_factory=list)  # cumulative explained variance per kept component
    scores: dict[int, float] = field(default_factory=dict)  # k -> silhouette, when k was chosen automatically


def stored_photos(store: Store, dirs: Sequence[Path] = ()) -> list[FileRecord]:
    """Live files with an embedding, under `dirs` (all when none), by path."""
    wanted = [str(Path(d).resolve()) for d in dirs]
    known = store.files.stat_index(wanted or None)
    ids = [k.id for k in known.values() if k.status == FileStatus.OK]
    recs = [r for r in store.files.many(ids).values() if r.embedding is not None]
    return sorted(recs, key=lambda r: r.path)


def reduce(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """PCA to at most MAX_DIMS components, fitted on a sample; the coordinates of every row and the cumulative
    explained variance of the components kept."""
    from sklearn.decomposition import PCA

    n = len(x)
    dims = max(1, min(MAX_DIMS, n - 1, x.shape[1]))
    rng = np.random.default_rng(seed)
    sample = x if n <= PCA_SAMPLE else x[rng.choice(n, PCA_SAMPLE, replace=False)]
    pca = PCA(n_components=dims, random_state=seed).fit(sample)
    return pca.transform(x).astype(np.float32), np.cumsum(pca.explained_variance_ratio_).round(4).tolist()


def _kmeans(y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(y) <= 20_000:  # exact k-means is fast enough and steadier on small libraries
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(y)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed).fit(y)
    return km.labels_, km.cluster_centers_


def choose_k(y: np.ndarray, k_max: int, seed: int = 0) -> tuple[int, dict[int, float]]:
    """The k in 2..k_max with the highest silhouette (on a sample), and every k's score. Fewer than 3 photos, or
    no k that separates anything (best silhouette under 0.1): one cluster."""
    from sklearn.metrics import silhouette_score

    n = len(y)
    top = min(k_max, n - 1)
    if top < 2:
        return 1, {}
    rng = np.random.default_rng(seed)
    pick = np.arange(n) if n <= SILHOUETTE_SAMPLE else rng.choice(n, SILHOUETTE_SAMPLE, replace=False)
    scores: dict[int, float] = {}
    for k in range(2, top + 1):
        labels, _ = _kmeans(y, k, seed)
        if len(set(labels[pick].tolist())) < 2:
            continue
        scores[k] = round(float(silhouette_score(y[pick], labels[pick], random_state=seed)), 4)
    if not scores or max(scores.values()) < 0.1:
        return 1, scores
    return max(scores, key=lambda k: (scores[k], -k)), scores


def cluster(
    files: list[FileRecord],
    k: int | None = None,
    k_max: int = 40,
    min_size: int = 1,
    policy: KeeperPolicy | None = None,
    seed: int = 0,
) -> Clustering:
    """Cluster the files' stored embeddings (k given, or chosen by silhouette); clusters smaller than `min_size`
    are left out (their files get label -1). Each cluster names its best shot (KeeperPolicy.best_shot)."""
    if not files:
        return Clustering("none", 0, [], np.zeros((0, 0), np.float32), [], np.zeros(0, int))
    x = np.stack([np.asarray(f.embedding, np.float32) for f in files])
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-9
    y, explained = reduce(x, seed)
    scores: dict[int, float] = {}
    if k is None:
        k, scores = choose_k(y, k_max, seed)
        method = f"PCA ({y.shape[1]} dims) + k-means, k by silhouette over 2..{min(k_max, len(files) - 1)}"
    else:
        k = max(1, min(k, len(files)))
        method = f"PCA ({y.shape[1]} dims) + k-means, k given"
    if k == 1:
        labels, centres = np.zeros(len(files), int), y.mean(axis=0, keepdims=True)
    else:
        labels, centres = _kmeans(y, k, seed)
    best_policy = (policy or KeeperPolicy()).best_shot()
    # clusters numbered from 1, largest first (then by their first path): stable for one database
    order = sorted(
        range(k),
        key=lambda c: (
            -int((labels == c).sum()),
            min((f.path for f, lab in zip(files, labels, strict=True) if lab == c), default=""),
        ),
    )
    clusters: list[Cluster] = []
    relabel = np.full(len(files), -1)
    for c in order:
        members = [f for f, lab in zip(files, labels, strict=True) if lab == c]
        if len(members) < max(1, min_size):
            continue
        d = choose(members, best_policy)
        relabel[labels == c] = len(clusters)
        clusters.append(Cluster(len(clusters) + 1, members, d.keeper, d.reason, centres[c]))
    return Clustering(method, len(clusters), clusters, y, files, relabel, explained, scores)


def bursts(
    files: list[FileRecord],
    gap_s: float = 2.0,
    min_cosine: float = 0.75,
    min_size: int = 2,
    policy: KeeperPolicy | None = None,
    shots: dict[int, int] | None = None,
) -> list[Cluster]:
    """Photos taken close together (EXIF capture time, else file time: at most `gap_s` seconds after the previous
    frame) that look alike (CNN cosine with the previous frame >= `min_cosine`, or the same similar-shot group in
    `shots`, file id -> group), each run with its best shot."""
    shots = shots or {}
    best_policy = (policy or KeeperPolicy()).best_shot()
    ordered = sorted(files, key=lambda f: (capture_time(f), f.path))
    runs: list[list[FileRecord]] = []
    for f in ordered:
        if runs:
            prev = runs[-1][-1]
            close = capture_time(f) - capture_time(prev) <= gap_s
            a, b = np.asarray(f.embedding, np.float32), np.asarray(prev.embedding, np.float32)
            same_shot = shots.get(f.id) is not None and shots.get(f.id) == shots.get(prev.id)
            alike = same_shot or float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)) >= min_cosine
            if close and alike:
                runs[-1].append(f)
                continue
        runs.append([f])
    out: list[Cluster] = []
    for run in runs:
        if len(run) < min_size:
            continue
        d = choose(run, best_policy)
        out.append(Cluster(len(out) + 1, run, d.keeper, d.reason, np.zeros(0, np.float32)))
    return out


def export(clusters: Sequence[Cluster], dest: Path, copy: bool = False, roots: Sequence[str] = ()) -> int:
    """One folder per cluster under `dest` (cluster_001, ...) holding a symlink to (or, with `copy`, a copy of)
    each member; the originals are never moved or changed. Returns the number of entries made."""
    import shutil

    if any(is_under(str(dest.resolve()), r) for r in roots):
        raise ValueError(f"{dest} lies inside a scanned folder: the links would be scanned as photos")
    made = 0
    for c in clusters:
        folder = dest / f"cluster_{c.id:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n, f in enumerate(c.members):
            target = folder / f"{n:04d}_{Path(f.path).name}"
            if target.exists() or target.is_symlink():
                continue
            if copy:
                shutil.copy2(f.path, target)
            else:
                target.symlink_to(f.path)
            made += 1
    return made
