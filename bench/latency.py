"""Watcher latency and event-storm throughput.

    python -m bench.latency [--files 100] [--storm 10000] [--storm-model tinynet|efficientnet-lite0]

Latency: a photo is in the watched folder; each trial writes a near-duplicate of it (a JPEG re-encode, written and
closed in one go) and measures from the close to the duplicate event (median and p95). Storm: N distinct small
images are dropped at once; the figure is files recorded per second until the database holds all N.
"""

from __future__ import annotations

import argparse
import io
import operator
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import PHOTOS, load_photo
from dupwatch.daemon.pipeline import Duplicate
from dupwatch.daemon.service import Service
from dupwatch.daemon.store import Store
from tests.helpers import ServiceThread, noise_png, wait_until


class _TimedService(Service):
    """The service, noting when each duplicate event is raised."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[str, float] = {}

    def duplicates_found(self, found: list[Duplicate]) -> None:
        now = time.monotonic()
        for d in found:
            self.seen.setdefault(d.path, now)
        super().duplicates_found(found)


def latency(files: int, work: Path) -> list[float]:
    from dupwatch.hashing.embedding import default_embedder

    folder = work / "latency"
    folder.mkdir()
    cfg = Config(db=work / "latency.db")
    service = _TimedService(cfg, [folder], default_embedder())
    seen = service.seen
    bases = [load_photo(p).resize((1600, 1200)) for p in PHOTOS[:4]]
    for n, im in enumerate(bases):
        im.save(folder / f"base{n}.jpg", quality=92)
    out = []
    with ServiceThread(service):
        wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["files"] == len(bases), 60)
        for i in range(files):
            buf = io.BytesIO()
            bases[i % len(bases)].save(buf, "JPEG", quality=60 + i % 30)
            path = folder / f"dup{i:03d}.jpg"
            with open(path, "wb") as f:
                f.write(buf.getvalue())
            closed = time.monotonic()
            if not wait_until(partial(operator.contains, seen, str(path)), 30, every=0.005):
                raise RuntimeError(f"no duplicate event for {path}")
            out.append(seen[str(path)] - closed)
    return out


def storm(n: int, model: str, work: Path) -> tuple[float, float]:
    from dupwatch.hashing.embedding import default_embedder, tiny_embedder

    folder = work / "storm"
    folder.mkdir()
    cfg = Config(db=work / "storm.db", model=model, batch_size=32)
    embedder = tiny_embedder() if model == "tinynet" else default_embedder()
    with ServiceThread(Service(cfg, [folder], embedder)):
        t = time.monotonic()
        for i in range(n):
            (folder / f"f{i:05d}.png").write_bytes(noise_png(i, size=96))
        written = time.monotonic() - t
        ok = wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["files"] == n, 3600, every=0.5)
        elapsed = time.monotonic() - t
    if not ok:
        raise RuntimeError("not every file was recorded")
    return written, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--storm", type=int, default=10_000)
    ap.add_argument("--storm-model", default="tinynet", choices=("tinynet", "efficientnet-lite0"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.files:
            lat = sorted(latency(args.files, work))
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            print(
                f"latency from close to duplicate event over {len(lat)} files (1600x1200 JPEG re-encodes, "
                f"real CNN): median {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                f"max {lat[-1] * 1000:.0f} ms"
            )
        if args.storm:
            written, elapsed = storm(args.storm, args.storm_model, work)
            print(
                f"storm: {args.storm} files dropped in {written:.1f}s, all recorded after {elapsed:.1f}s "
                f"= {args.storm / elapsed:.0f} files/s ({args.storm_model})"
            )


if __name__ == "__main__":
    main()
