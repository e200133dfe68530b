"""`dupwatch serve` on a 10,000-photo database: search latency and review page load, as a user meets them.

    python -m bench.serve [--n 10000] [--queries 100] [--dir DIR]

The library: the demo's 11 sample photos x 16 variants at 640 px (176 files), scanned with the real CNN; then
grown to N rows by clones: hard links to those files under new names, each row a copy of its source's fingerprint
with its own content hash and its embedding moved a little (cosine ~0.95 to the source), in groups of 2-4 with
copy pairs between them (~3,000 groups). Search verifies candidates against the files on disk as it always does.

Figures, through a real `dupwatch serve` process over HTTP:
- search: POST /api/search of 100 images (half files of the library, half new re-encoded and resized copies),
  p50/p95/max, after 3 warm-up searches (the first one, with the model load, reported apart);
- review: GET /api/groups page 1 (50 groups), and all of that page's thumbnails fetched 6 at a time, cold (empty
  thumbnail cache) and warm; and in headless Chromium: from navigation to the page's groups rendered with every
  thumbnail in view decoded, cold and warm;
- the server's peak RSS.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx  # the client Starlette recommends; httpx itself is not a dependency
import numpy as np
from PIL import Image

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import generate
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.records import FileRow, FileStatus, PairRecord, Tier
from dupwatch.daemon.store import Store
from dupwatch.hashing.embedding import default_embedder

REPO = Path(__file__).resolve().parents[1]


def build(work: Path, n: int, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    photos = work / "photos"
    generate(photos / "real", size=640, bad=False)
    db = work / "serve.db"
    store = Store(db)
    t = time.perf_counter()
    with open_pipeline(Config(db=db, workers=2), store, default_embedder()) as p:
        p.scan([photos / "real" / "images"])
    real = [r for r in store.files.many(range(1, 100_000)).values() if r.status == FileStatus.OK]
    print(f"scanned {len(real)} real files in {time.perf_counter() - t:.1f} s")
    clones = photos / "clones"
    made = 0
    ids: list[int] = []
    with store.atomic():
        gen = store.next_gen()
        while len(real) + made < n:
            src = real[int(rng.integers(len(real)))]
            assert src.embedding is not None
            members = []
            for _ in range(int(rng.integers(2, 5))):
                if len(real) + made >= n:
                    break
                path = clones / f"{made // 1000:03d}" / f"clone_{made:06d}{Path(src.path).suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(src.path, path)
                v = src.embedding.astype(np.float32)
                v = v + 0.33 * np.linalg.norm(v) / np.sqrt(len(v)) * rng.standard_normal(len(v)).astype(np.float32)
                row = FileRow(
                    **{
                        **{k: getattr(src, k) for k in FileRow.__dataclass_fields__},
                        "path": str(path),
                        "content_hash": f"{made:08x}{(src.content_hash or '')[8:]}",
                        "pixel_hash": None,
                        "embedding": (v / np.linalg.norm(v)).astype(np.float16),
                    }
                )
                fid = store.files.save(row, gen)
                members.append((fid, v / np.linalg.norm(v)))
                made += 1
            for (a, va), (b, vb) in itertools.pairwise(members):
                store.graph.add_pair(PairRecord(a, b, Tier.COPY, 2, float(va @ vb), 0, 60, 0.98, 0.02, 0.0))
            ids += [m[0] for m in members]
        store.graph.regroup(ids)
        store.decisions.add_roots([str(clones)])  # as if scanned: the app serves files inside the roots only
    counts = store.read.counts()
    print(f"database: {counts['files']} photos, {counts['groups']} duplicate groups, {counts['pairs']} pairs")
    store.close()
    return db


def _queries(db: Path, k: int, seed: int = 5) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    real = sorted((Path(db).parent / "photos" / "real" / "images").rglob("*.*"))
    real = [p for p in real if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    out = []
    for i in range(k):
        src = rnd.choice(real)
        if i % 2 == 0:
            out.append((src.name, src.read_bytes()))
        else:
            im = Image.open(src).convert("RGB")
            im = im.resize((im.width * 3 // 4, im.height * 3 // 4))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=70)
            out.append(("new_" + src.stem + ".jpg", buf.getvalue()))
    return out


def _serve(db: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    out = open(log, "w")  # noqa: SIM115 - the server writes to it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "serve", "--port", "0"],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    for _ in range(600):
        found = re.findall(r"open (http://\S+)", log.read_text())
        if found:
            return proc, found[0].rsplit("/", 1)[0]
        time.sleep(0.1)
    raise RuntimeError(log.read_text())


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def measure(db: Path, queries: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    thumbs = Config(db=db).thumbs_path
    shutil.rmtree(thumbs, ignore_errors=True)
    proc, base = _serve(db, db.with_suffix(".serve.log"))
    try:
        with httpx.Client(timeout=120) as client:
            qs = _queries(db, queries + 3)
            t = time.perf_counter()
            r = client.post(base + "/api/search", files={"image": qs[0]}, data={"k": "10"})
            r.raise_for_status()
            figures["first_search_s"] = time.perf_counter() - t
            for q in qs[1:3]:
                client.post(base + "/api/search", files={"image": q}, data={"k": "10"}).raise_for_status()
            lat = []
            for q in qs[3:]:
                t = time.perf_counter()
                client.post(base + "/api/search", files={"image": q}, data={"k": "10"}).raise_for_status()
                lat.append(time.perf_counter() - t)
            figures["search_p50_ms"] = _pct(lat, 50) * 1000
            figures["search_p95_ms"] = _pct(lat, 95) * 1000
            figures["search_max_ms"] = max(lat) * 1000

            def page(label: str) -> None:
                t = time.perf_counter()
                data = client.get(base + "/api/groups", params={"page": 1, "size": 50}).json()
                figures[f"groups_api_{label}_ms"] = (time.perf_counter() - t) * 1000
                paths = [m["path"] for g in data["groups"] for m in g["members"]]
                t = time.perf_counter()

                def thumb(p: str) -> int:
                    return client.get(base + "/api/thumb", params={"path": p}).status_code

                with ThreadPoolExecutor(6) as pool:  # a browser's connections per host
                    codes = list(pool.map(thumb, paths))
                assert set(codes) == {200}, set(codes)
                figures[f"thumbs_{label}_ms"] = (time.perf_counter() - t) * 1000
                figures["thumbs_per_page"] = len(paths)

            page("cold")
            page("warm")
            shutil.rmtree(thumbs, ignore_errors=True)
            figures.update(_browser(base))
            status = Path(f"/proc/{proc.pid}/status").read_text()
            figures["server_peak_rss_mb"] = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return figures


def _browser(base: str) -> dict[str, float]:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    if chromium is None:
        return {}
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
    out: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=flags)
        for label in ("cold", "warm"):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.perf_counter()
            page.goto(base + "/review")
            page.wait_for_selector(".group")
            page.wait_for_function(
                "() => Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight)"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            out[f"page_load_{label}_ms"] = (time.perf_counter() - t) * 1000
            page.close()
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--dir", type=Path, help="work folder (kept); default: a temporary one")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="dupwatch-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "serve.db"
    if not db.exists():
        build(work, args.n)
    figures = measure(db, args.queries)
    print(f"\n`dupwatch serve` on {args.n:,} photos ({os.cpu_count()} CPUs):")
    for k, v in figures.items():
        print(f"  {k:>22}: {v:,.1f}")
    print(f"  (search: {args.queries} queries, one at a time, after 3 warm-up ones)")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
