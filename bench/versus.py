"""dupwatch beside imagededup PHash and findimagedupes, whole-process wall time and F1, in one run (issue 11's table).

    python -m bench.versus [--work DIR] [--runs N]

Two labelled sets from bench/datagen.py (the demo's generator): a mixed library (every sample photo with its
variants, originals cycling through 300, 640, 1024, 2048 and 3600 px) and camera-size JPEGs (4032 px originals,
the first five photos with their variants). Each tool runs as a new process on the whole folder, N times (3 by
default) interleaved with the others, timed from start to exit, and its median is given (dupwatch: `dupwatch
scan` into a new database, model load included; imagededup: its PHash `find_duplicates` in its own interpreter;
findimagedupes: the Debian program, 90 %). Then: CNN ms/img per inference path (bench.speed.cnn_paths), CNN
passes per photo of an in-process scan, `dupwatch scan` of one photo (median of 3), and the peak RSS of the
dupwatch scans.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import peers
from bench.datagen import PHOTOS, camera_set, generate
from bench.run import dupwatch_cli
from bench.scoring import relative, score
from bench.speed import _rate, cnn_paths
from dupwatch.daemon.config import Config
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.store import Store
from dupwatch.hashing.embedding import default_embedder
from dupwatch.hashing.fingerprint import fingerprint_file

DUPWATCH = Path(sys.executable).with_name("dupwatch")
PEAKS: list[float] = []  # MB, each dupwatch scan's own peak RSS


def _new_db(work: Path, name: str) -> Path:
    """A database path in a folder of its own: every scan starts from nothing, also when --work is reused."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work)) / f"{name}.db"


def versus(name: str, root: Path, truth: dict, work: Path, runs: int = 3) -> list[str]:
    """Each tool `runs` times, interleaved (dupwatch, PHash, findimagedupes, then again): the median wall time of
    each, with its range, and the ratios of the medians. The machine's speed drifts within minutes; interleaving
    spreads that drift over all three tools instead of charging it to one."""
    files = sum(1 for p in root.rglob("*") if p.is_file())
    walls: dict[str, list[float]] = {"dupwatch": [], "phash": [], "fid": []}
    f1: dict[str, float | None] = {}
    for _ in range(runs):
        groups, ours, peak, _ = dupwatch_cli(root, _new_db(work, name))
        PEAKS.append(peak)
        walls["dupwatch"].append(ours)
        f1["dupwatch"] = score(truth, relative(groups, root)).f1
        t = time.perf_counter()
        phash = peers.imagededup(root, "PHash")
        walls["phash"].append(time.perf_counter() - t)
        f1["phash"] = None if phash.unavailable else score(truth, relative(phash.groups, root)).f1
        t = time.perf_counter()
        fid = peers.findimagedupes(root)
        walls["fid"].append(time.perf_counter() - t)
        f1["fid"] = None if fid.unavailable else score(truth, relative(fid.groups, root)).f1
    ours = statistics.median(walls["dupwatch"])
    rows = [("**dupwatch** scan", "dupwatch"), ("imagededup PHash", "phash"), ("findimagedupes 90%", "fid")]
    lines = [
        f"\n### {name}: {files} files\n",
        f"| tool | wall time, median of {runs} (range) | dupwatch is | F1 |",
        "|---|---|---|---|",
    ]
    for tool, key in rows:
        seconds = statistics.median(walls[key])
        ratio = (
            "-"
            if key == "dupwatch" or f1[key] is None  # dupwatch itself, or a peer that could not run
            else (f"{seconds / ours:.2f}x faster" if seconds > ours else f"{ours / seconds:.2f}x slower")
        )
        spread = f"{min(walls[key]):.1f}-{max(walls[key]):.1f}"
        score_ = f1[key]
        lines.append(
            f"| {tool} | {seconds:.1f} s ({spread}) | {ratio} | {'-' if score_ is None else f'{score_:.3f}'} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="keep the sets here (default: a temporary folder)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool, interleaved (default 3; the median)")
    args = ap.parse_args()
    runs = max(1, args.runs)
    peers.install(lambda m: print(m, file=sys.stderr))
    work = args.work or Path(tempfile.mkdtemp(prefix="dupwatch-versus-"))
    mixed, camera = work / "mixed", work / "camera"
    if not mixed.exists():
        generate(mixed, size=(300, 640, 1024, 2048, 3600), photos=PHOTOS)
    camera_set(camera, 5)
    import json

    out = [f"## dupwatch beside the hash tools (whole-process wall time, {runs} interleaved runs, this machine)"]
    for name, folder in (("mixed library", mixed), ("camera-size JPEGs", camera)):
        truth = json.loads((folder / "truth.json").read_text())
        out += versus(name.replace(" ", "-"), folder / "images", truth, work, runs)
    # CNN paths and passes per photo, in this process
    fps = [
        fingerprint_file(str(p), 448, 200_000_000, 1 << 30).fingerprint
        for p in sorted((camera / "images").rglob("*.jpg"))[:64]
    ]
    pixels = np.stack([f.pixels for f in fps if f is not None])
    out += ["\n| CNN path | throughput | min cosine to fp32 eager | ready in |", "|---|---|---|---|"]
    for path, seconds, cosine, build in cnn_paths(pixels):
        out.append(f"| {path} | {_rate(len(pixels), seconds)} | {cosine:.5f} | {build:.1f} s |")
    emb = default_embedder()
    cfg = Config(db=_new_db(work, "passes"), workers=2)
    with open_pipeline(cfg, Store(cfg.db), emb) as p:
        stats = p.scan([mixed / "images"])
    one = work / "one"
    one.mkdir(exist_ok=True)
    first = sorted((camera / "images").rglob("*.jpg"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([str(DUPWATCH), "--db", str(_new_db(work, "one")), "-q", "scan", str(one)], check=True)
        times.append(time.perf_counter() - t)
    out += [
        "",
        f"CNN passes per photo (mixed library, in process): {emb.images / max(1, stats.fingerprinted):.2f}",
        f"`dupwatch scan` of one camera photo, new database: {statistics.median(times):.2f} s (median of 3)",
        f"peak RSS of the dupwatch scans: {', '.join(f'{p:.0f}' for p in PEAKS)} MB",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
