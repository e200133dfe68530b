"""`dupwatch scan` by cores, decoding workers and device: whole-process wall time and the main process's CPU time,
with the groups checked against the first configuration's and scored.

    python -m bench.cores [--work DIR] [--cores 1 2 4] [--device cpu cuda] [--workers 2 3] [--runs 2] [--photos N]

The set is camera-size JPEGs from bench/datagen.py (4032 px originals of the first N sample photos with their JPEG
variants; all 11 by default: 175 files). Each configuration runs `dupwatch scan` into a new database as a new
process, pinned to the first C cores (`sched_setaffinity`, which the scan sizes its CNN threads by), the
configurations interleaved run by run; a device the machine lacks is left out. On a GPU machine this gives CUDA's
images/s beside the CPU's on the same files; on any machine, how the scan scales with its cores. The CPU time is
what the scan's process and the children it waited for used: the decoding workers, forked by a server it does not
wait for, are not in it (`perf stat` counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.datagen import PHOTOS, camera_set
from bench.run import dupwatch_cli
from bench.scoring import relative, score


@dataclass(frozen=True)
class Setup:
    cores: int
    device: str
    workers: int


@dataclass
class Scan:
    wall: float
    cpu: float
    groups: list[list[str]]


def scan(root: Path, setup: Setup, work: Path) -> Scan:
    """One `dupwatch scan` of `root` into a new database, pinned to the first `setup.cores` cores."""
    db = Path(tempfile.mkdtemp(prefix="cores-", dir=work)) / "cores.db"
    options = ["--device", setup.device, "--workers", str(setup.workers)]
    done = dupwatch_cli(root, db, options, set(range(setup.cores)))
    return Scan(done.seconds, done.cpu, sorted(sorted(g) for g in done.groups))


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def table(root: Path, truth: dict, setups: list[Setup], runs: int, work: Path) -> list[str]:
    """Every setup `runs` times, interleaved; a markdown table of the medians."""
    scans: dict[Setup, list[Scan]] = {s: [] for s in setups}
    for _ in range(runs):
        for s in setups:
            scans[s].append(scan(root, s, work))
    files = sum(1 for p in root.rglob("*") if p.is_file())
    first = scans[setups[0]][0].groups
    lines = [
        f"| cores | device | decoding workers | wall, median of {runs} (range) | images/s | CPU, main process | F1 | "
        "groups as the first row's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, done in scans.items():
        walls = [d.wall for d in done]
        wall = statistics.median(walls)
        f1 = score(truth, relative(done[0].groups, root)).f1
        same = "yes" if all(d.groups == first for d in done) else "NO"
        cpu = statistics.median(d.cpu for d in done)
        lines.append(
            f"| {s.cores} | {s.device} | {s.workers} | {wall:.2f} s ({min(walls):.2f}-{max(walls):.2f}) | "
            f"{files / wall:.1f} | {cpu:.2f} s | {f1:.3f} | {same} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="keep the set here (default: a temporary folder)")
    ap.add_argument("--cores", type=int, nargs="+", help="core counts (default: 1, 2, 4, ... up to this machine's)")
    ap.add_argument("--device", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="decoding workers (default 2)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--photos", type=int, default=len(PHOTOS), help="the first N sample photos (default all)")
    args = ap.parse_args()
    here = len(os.sched_getaffinity(0))
    cores = args.cores or [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= here]
    devices = [d for d in args.device if d == "cpu" or has_cuda()]
    work = args.work or Path(tempfile.mkdtemp(prefix="dupwatch-cores-"))
    work.mkdir(parents=True, exist_ok=True)
    camera_set(work / "camera", args.photos)
    root, truth = work / "camera" / "images", json.loads((work / "camera" / "truth.json").read_text())
    setups = [Setup(c, d, w) for d in devices for c in cores if c <= here for w in args.workers]
    print(f"## `dupwatch scan` of {sum(1 for p in root.rglob('*') if p.is_file())} camera-size JPEGs ({here} cores)\n")
    print("\n".join(table(root, truth, setups, max(1, args.runs), work)))


if __name__ == "__main__":
    main()
