"""Accuracy: pairwise precision/recall/F1 of dupwatch's groups on labelled sets, per transform, and a sweep over
the confirmation thresholds from which the defaults in daemon/config.py were chosen.

    python -m bench.accuracy [--generated-size 1024] [--no-bench-data] [--plot sweep.png]

Each set is scanned once with permissive settings that record every candidate pair with its CNN cosine and its
geometric inliers; each threshold pair is then applied to those recorded pairs (connected components, scored).
The defaults are scored by a real scan with the default config.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.scoring import Score, relative, score
from dupwatch.daemon.components import components
from dupwatch.daemon.config import Config
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.store import Store

if TYPE_CHECKING:
    from dupwatch.hashing.embedder import Embedder

BENCH_DATA = Path(__file__).resolve().parents[2] / "shared" / "bench-data"
THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
INLIERS = (0, 10, 18, 25, 32, 40)
GREY = (25, 40, 60, 10_000)  # grey-zone inliers; 10000 = no grey zone


def load_sets(generated_size: int, bench_data: bool, workdir: Path) -> list[tuple[str, Path, dict]]:
    import json

    from bench.datagen import generate

    sets = []
    if bench_data and (BENCH_DATA / "truth.json").exists():
        truth = json.loads((BENCH_DATA / "truth.json").read_text())
        sets.append(("shared/bench-data", BENCH_DATA / truth["root"], truth))
    out = workdir / "generated"
    truth = generate(out, size=generated_size)
    sets.append((f"generated ({generated_size} px)", out / "images", truth))
    return sets


def permissive(defaults: Config, db: Path) -> Config:
    """Settings under which every candidate over verify_low is verified and recorded with its cosine and inliers,
    so that the sweep can re-decide at any threshold; the high cosine threshold keeps the rotated views computed
    for all of them, as the real scan does."""
    return replace(
        defaults, db=db, cosine_threshold=0.999, verify_inliers=0, grey_inliers=0, verify_max_candidates=1000
    )


def scan(cfg: Config, root: Path, embedder: Embedder) -> Store:
    store = Store(cfg.db)
    with open_pipeline(cfg, store, embedder) as p:
        p.scan([root])
    return store


def recorded_pairs(store: Store) -> list[tuple[str, str, str, float, int]]:
    rows = store.db.execute(
        "SELECT fa.path, fb.path, p.kind, p.cosine, coalesce(p.inliers, 0) FROM pairs p "
        "JOIN files fa ON fa.id = p.a JOIN files fb ON fb.id = p.b"
    ).fetchall()
    return [tuple(r) for r in rows]


def sweep(
    pairs: list[tuple[str, str, str, float, int]], truth: dict, root: Path, grey_inliers: int, verify_low: float
) -> dict[tuple[float, int, int], Score]:
    out = {}
    keys = [(t, inl, grey_inliers) for t in THRESHOLDS for inl in INLIERS]
    keys += [(0.8, 25, g) for g in GREY if g != grey_inliers]
    for t, inl, grey in keys:
        edges = [
            (a, b)
            for a, b, kind, cos, n in pairs
            if kind == "exact" or (cos >= t and n >= inl) or (cos >= verify_low and n >= grey)
        ]
        out[(t, inl, grey)] = score(truth, relative(components(edges), root))
    return out


def fmt(s: Score) -> str:
    return f"{s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.hard_negatives_wrong} | {s.bad_in_groups}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated-size", type=int, default=1024)
    ap.add_argument("--no-bench-data", action="store_true")
    ap.add_argument("--plot", type=Path, help="write the precision/recall sweep as a PNG")
    args = ap.parse_args()

    from dupwatch.hashing.embedding import default_embedder

    embedder = default_embedder()
    defaults = Config()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = load_sets(args.generated_size, not args.no_bench_data, work)
        sweeps = {}
        for n, (name, root, truth) in enumerate(sets):
            store = scan(permissive(defaults, work / f"p{n}.db"), root, embedder)
            sweeps[name] = sweep(recorded_pairs(store), truth, root, defaults.grey_inliers, defaults.verify_low)
            real = scan(replace(defaults, db=work / f"d{n}.db"), root, embedder)
            groups = [[r.path for r in recs] for _, recs in real.read.groups()]
            s = score(truth, relative(groups, root))
            flips = score(truth, relative(groups, root), exclude=frozenset({"flip"}))
            print(
                f"\n## {name}: default settings (cosine >= {defaults.cosine_threshold}, "
                f"inliers >= {defaults.verify_inliers})\n"
            )
            print("| P | R | F1 | hard negatives grouped | bad files grouped | F1 without flips |")
            print("|---|---|---|---|---|---|")
            print(f"| {fmt(s)} | {flips.f1:.3f} |")
            print("\n| transform | with original |\n|---|---|")
            for t, (hit, total) in sorted(s.per_transform.items()):
                print(f"| {t} | {hit}/{total} |")

        print("\n## Threshold sweep: cosine threshold x geometric inliers x grey-zone inliers\n")
        head = " | ".join(f"{name} P / R / F1 / hard neg." for name in sweeps)
        print(f"| cosine | inliers | grey inliers | {head} |\n|---|---|---|" + "---|" * len(sweeps))
        default_key = (defaults.cosine_threshold, defaults.verify_inliers, defaults.grey_inliers)
        for key in sweeps[next(iter(sweeps))]:
            cells = " | ".join(
                f"{sw[key].precision:.3f} / {sw[key].recall:.3f} / {sw[key].f1:.3f} / {sw[key].hard_negatives_wrong}"
                for sw in sweeps.values()
            )
            mark = " **default**" if key == default_key else ""
            grey = "off" if key[2] >= 10_000 else key[2]
            print(f"| {key[0]:.2f}{mark} | {key[1]} | {grey} | {cells} |")
        if args.plot:
            from bench.plot import precision_recall_png

            precision_recall_png(sweeps, args.plot, defaults.verify_inliers, defaults.grey_inliers)
            print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
