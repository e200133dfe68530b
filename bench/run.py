"""Every benchmark in one command: accuracy and speed of dupwatch beside the tools people use today, and scale.

    python bench/run.py            # full: generated set with originals from 256 px to 4032x3024, 1M-item scale run
    python bench/run.py --quick    # a few minutes: smaller sets, 20,000-item scale run

Installs what the peers need (bench/peers.py), then prints markdown tables: one row per tool with precision,
recall, F1 and images/s on each labelled set, the speed of each stage on camera-size JPEGs, and the scale figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import peers
from bench.accuracy import BENCH_DATA, recorded_pairs, sweep
from bench.scoring import Score, relative, score


class CliScan(NamedTuple):
    groups: list[list[str]]
    seconds: float
    peak_mb: float  # the scan's own peak RSS, read by /usr/bin/time where there is one; else the largest child's
    cpu: float  # seconds of CPU of the scan's process and the children it waited for (not the decoding workers)


def dupwatch_cli(root: Path, db: Path, options: Sequence[str] = (), cpus: set[int] | None = None) -> CliScan:
    """Scan with the real command line in a child process (`options` after `scan`; pinned to `cpus` if given),
    then read its groups from `report --format json`."""
    exe = Path(sys.executable).with_name("dupwatch")
    scan = [str(exe), "--db", str(db), "-q", "scan", *options, str(root)]
    rss = db.with_name(db.name + ".rss")
    timed = Path("/usr/bin/time").exists()
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    command = ["/usr/bin/time", "-o", str(rss), "-f", "%M", *scan] if timed else scan
    subprocess.run(command, check=True, preexec_fn=pin)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if timed:
        peak = int(rss.read_text().split()[-1]) / 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = subprocess.run(
        [str(exe), "--db", str(db), "report", "--format", "json"], check=True, capture_output=True, text=True
    ).stdout
    groups = [[m["path"] for m in g["members"]] for g in json.loads(out)["groups"]]
    return CliScan(groups, seconds, peak, cpu)


def row(tool: str, s: Score | None, flips: Score | None, files: int, seconds: float, note: str = "") -> str:
    if s is None:
        return f"| {tool} | - | - | - | - | - | - | {note} |"
    rate = f"{files / seconds:.1f}" if seconds else "-"
    return (
        f"| {tool} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {flips.f1:.3f} | "  # type: ignore[union-attr]
        f"{s.hard_negatives_wrong} | {rate} | {note} |"
    )


def accuracy_table(name: str, root: Path, truth: dict, work: Path) -> tuple[list[str], dict]:
    files = sum(1 for p in root.rglob("*") if p.is_file())
    lines = [
        f"\n### {name} ({files} files)\n",
        "| tool | P | R | F1 | F1 without flips | hard negatives grouped | images/s | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    no_flip = frozenset({"flip"})
    groups, seconds, peak, _ = dupwatch_cli(root, work / f"{abs(hash(name))}.db")
    rel = relative(groups, root)
    lines.append(
        row(
            "**dupwatch**",
            score(truth, rel),
            score(truth, rel, no_flip),
            files,
            seconds,
            f"CLI scan incl. model load; peak RSS {peak:.0f} MB",
        )
    )
    for run in peers.all_peers(root):
        if run.unavailable:
            lines.append(row(run.tool, None, None, 0, 0, run.unavailable))
            continue
        rel = relative(run.groups, root)
        lines.append(row(run.tool, score(truth, rel), score(truth, rel, no_flip), files, run.seconds))
    return lines, {"files": files}


def threshold_sweep(sets: list[tuple[str, Path, dict]], work: Path, plot: Path) -> list[str]:
    from bench.accuracy import permissive, scan
    from bench.plot import precision_recall_png
    from dupwatch.daemon.config import Config
    from dupwatch.hashing.embedding import default_embedder

    defaults = Config()
    embedder = default_embedder()
    sweeps = {}
    for n, (name, root, truth) in enumerate(sets):
        sweeps[name] = sweep(
            recorded_pairs(scan(permissive(defaults, work / f"sweep{n}.db"), root, embedder)),
            truth,
            root,
            defaults.grey_inliers,
            defaults.verify_low,
        )
    precision_recall_png(sweeps, plot, defaults.verify_inliers, defaults.grey_inliers)
    lines = [
        "\n## Threshold sweep (P / R / F1 / hard negatives grouped)\n",
        "| cosine | inliers | grey inliers | " + " | ".join(sweeps) + " |",
        "|---|---|---|" + "---|" * len(sweeps),
    ]
    default_key = (defaults.cosine_threshold, defaults.verify_inliers, defaults.grey_inliers)
    for key in sweeps[next(iter(sweeps))]:
        cells = " | ".join(
            f"{s[key].precision:.3f} / {s[key].recall:.3f} / {s[key].f1:.3f} / {s[key].hard_negatives_wrong}"
            for s in sweeps.values()
        )
        mark = " **default**" if key == default_key else ""
        lines.append(f"| {key[0]:.2f}{mark} | {key[1]} | {'off' if key[2] >= 10_000 else key[2]} | {cells} |")
    lines.append(f"\nplot: {plot}")
    return lines


def speed_table(n: int, work: Path) -> list[str]:
    from bench.speed import make_camera_jpegs

    folder = work / "camera"
    make_camera_jpegs(folder, n)
    lines = [
        f"\n## Speed on {n} camera-size JPEGs (4032x3024, ~3.5 MB)\n",
        "| tool | images/s | ratio to dupwatch |",
        "|---|---|---|",
    ]
    _, seconds, peak, _ = dupwatch_cli(folder, work / "camera.db")
    base = n / seconds
    lines.append(f"| **dupwatch** (CLI scan, model load included; peak RSS {peak:.0f} MB) | {base:.1f} | 1.00 |")
    for run in peers.all_peers(folder):
        if run.unavailable:
            lines.append(f"| {run.tool} | - ({run.unavailable}) | - |")
        else:
            rate = n / run.seconds
            lines.append(f"| {run.tool} | {rate:.1f} | {rate / base:.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--scale-n", type=int, help="items in the scale run (default 1,000,000; 20,000 with --quick)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    peers.install(log)
    from bench.datagen import PHOTOS, generate

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = (256, 640) if args.quick else (256, 1024, 4032)
        gen = work / "generated"
        photos = ("chelsea", "coffee", "astronaut", "rocket", "camera") if args.quick else PHOTOS
        truth = generate(gen, size=sizes, photos=photos)
        sets = []
        if (BENCH_DATA / "truth.json").exists():
            bd = json.loads((BENCH_DATA / "truth.json").read_text())
            sets.append(("shared/bench-data", BENCH_DATA / bd["root"], bd))
        sets.append((f"bench/datagen.py, originals {'/'.join(map(str, sizes))} px", gen / "images", truth))
        out = ["# dupwatch benchmarks" + (" (quick)" if args.quick else ""), "\n## Accuracy"]
        for name, root, t in sets:
            log(f"accuracy: {name}")
            out += accuracy_table(name, root, t, work)[0]
        log("threshold sweep")
        out += threshold_sweep(sets, work, args.out / "sweep.png")
        log("speed")
        out += speed_table(16 if args.quick else 64, work)
        log("scale")
        from bench.scale import run as scale_run
        from bench.scale import table

        (work / "scale").mkdir()
        n = args.scale_n or (20_000 if args.quick else 1_000_000)
        out += ["\n## Scale\n", table(scale_run(n, work / "scale"))]
    text = "\n".join(out)
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
