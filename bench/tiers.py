"""Tiers: precision and recall of the duplicate groups (exact + copy) and the similar-shot groups (all tiers).

    python -m bench.tiers [--no-bench-data] [--size 900] [--seed 11] [--json out.json]

Scans, with the default settings, the look-alike set of bench/lookalikes.py (copies beside similar shots, layout-
alikes and featureless pictures, each pair labelled) and ../shared/bench-data (copies and hard negatives), then
scores pairwise:

- duplicate groups: a labelled pair is predicted when both files share a duplicate group; it should be when it is
  an exact or copy pair;
- similar-shot groups: predicted when both share a similar-shot group; it should be for exact, copy and similar
  pairs; layout-alikes may go either way (not scored); featureless pairs never.

Per label it also prints how many pairs landed in each kind of group, which is where confusions show.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.accuracy import scan as accuracy_scan
from bench.scoring import relative, score
from dupwatch.daemon.config import Config
from dupwatch.daemon.store import Store
from dupwatch.daemon.store.graph import DUPLICATES, SHOTS, Level
from dupwatch.hashing.embedding import default_embedder

BENCH_DATA = Path(__file__).resolve().parents[2] / "shared" / "bench-data"
POSITIVE = {"copy": {"exact", "copy"}, "similar": {"exact", "copy", "similar"}}
UNSCORED = {"copy": set(), "similar": {"layout"}}


@dataclass
class TierScore:
    precision: float
    recall: float
    true_positives: int
    predicted: int
    positives: int


def scan(root: Path, db: Path) -> Store:
    """`root` scanned with the default settings into a new database at `db` (bench.accuracy.scan)."""
    return accuracy_scan(Config(db=db), root, default_embedder())


def group_of_path(store: Store, level: Level) -> dict[str, int]:
    return {rec.path: gid for gid, recs in store.read.groups(level) for rec in recs}


def score_pairs(pairs: list[list[str]], groups: dict[str, int], tier: str) -> TierScore:
    tp = predicted = positives = 0
    for a, b, label in pairs:
        if label in UNSCORED[tier]:
            continue
        together = a in groups and groups.get(a) == groups.get(b)
        should = label in POSITIVE[tier]
        tp += together and should
        predicted += together
        positives += should
    return TierScore(
        precision=tp / predicted if predicted else 1.0,
        recall=tp / positives if positives else 1.0,
        true_positives=tp,
        predicted=predicted,
        positives=positives,
    )


def by_label(pairs: list[list[str]], dup: dict[str, int], shot: dict[str, int]) -> dict[str, dict[str, int]]:
    """label -> how many of its pairs share a duplicate group, only a similar-shot group, or nothing."""
    out: dict[str, dict[str, int]] = {}
    for a, b, label in pairs:
        row = out.setdefault(label, {"duplicate group": 0, "similar-shot group only": 0, "apart": 0, "pairs": 0})
        row["pairs"] += 1
        if a in dup and dup.get(a) == dup.get(b):
            row["duplicate group"] += 1
        elif a in shot and shot.get(a) == shot.get(b):
            row["similar-shot group only"] += 1
        else:
            row["apart"] += 1
    return out


def evidence(store: Store, pairs: list[list[str]]) -> dict[str, dict[str, float | int]]:
    """Per label, over the labelled pairs that were compared in detail: the range of the two detail measures (how
    close each kind comes to the copy limits)."""
    ids = {path: known.id for path, known in store.files.stat_index().items()}
    stored = {(p.a, p.b): p for p in store.read.live_pairs()}
    out: dict[str, dict[str, float | int]] = {}
    for a, b, label in pairs:
        if a not in ids or b not in ids:
            continue
        p = stored.get((min(ids[a], ids[b]), max(ids[a], ids[b])))
        if p is None or p.changed is None or p.scattered is None:
            continue
        row = out.setdefault(
            label, {"compared": 0, "changed_min": 1.0, "changed_max": 0.0, "scattered_min": 1.0, "scattered_max": 0.0}
        )
        row["compared"] += 1
        row["changed_min"] = min(row["changed_min"], p.changed)
        row["changed_max"] = max(row["changed_max"], p.changed)
        row["scattered_min"] = min(row["scattered_min"], p.scattered)
        row["scattered_max"] = max(row["scattered_max"], p.scattered)
    return out


def lookalike_set(workdir: Path, seed: int, size: int) -> dict:
    from bench.lookalikes import generate

    out = workdir / "lookalikes"
    truth = generate(out, seed=seed, size=size)
    store = scan(out / "images", workdir / "lookalikes.db")
    root = out / "images"
    pairs = [[str(root / a), str(root / b), label] for a, b, label in truth["pairs"]]
    dup, shot = group_of_path(store, DUPLICATES), group_of_path(store, SHOTS)
    return {
        "set": f"bench/lookalikes.py (seed {seed}, {size} px)",
        "duplicate groups": asdict(score_pairs(pairs, dup, "copy")),
        "similar-shot groups": asdict(score_pairs(pairs, shot, "similar")),
        "by label": by_label(pairs, dup, shot),
        "evidence": evidence(store, pairs),
    }


def bench_data_set(workdir: Path) -> dict | None:
    if not (BENCH_DATA / "truth.json").exists():
        return None
    truth = json.loads((BENCH_DATA / "truth.json").read_text())
    root = BENCH_DATA / truth["root"]
    store = scan(root, workdir / "bench-data.db")
    out: dict[str, object] = {"set": "../shared/bench-data"}
    for name, level in (("duplicate groups", DUPLICATES), ("similar-shot groups", SHOTS)):
        groups = [[r.path for r in recs] for _, recs in store.read.groups(level)]
        s = score(truth, relative(groups, root))
        out[name] = {
            "precision": s.precision,
            "recall": s.recall,
            "hard_negatives_wrong": s.hard_negatives_wrong,
            "bad_in_groups": s.bad_in_groups,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-bench-data", action="store_true")
    ap.add_argument("--size", type=int, default=900)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results.append(lookalike_set(work, args.seed, args.size))
        if not args.no_bench_data and (found := bench_data_set(work)) is not None:
            results.append(found)
    print("| set | groups | precision | recall |")
    print("|---|---|---|---|")
    for r in results:
        for name in ("duplicate groups", "similar-shot groups"):
            s = r[name]
            print(f"| {r['set']} | {name} | {s['precision']:.3f} | {s['recall']:.3f} |")
    for r in results:
        if "by label" in r:
            print(f"\n{r['set']}: where each kind of labelled pair landed")
            print("| label | pairs | same duplicate group | same similar-shot group only | apart |")
            print("|---|---|---|---|---|")
            for label, row in r["by label"].items():
                print(
                    f"| {label} | {row['pairs']} | {row['duplicate group']} | {row['similar-shot group only']} | "
                    f"{row['apart']} |"
                )
    for r in results:
        if "evidence" in r:
            print(
                f"\n{r['set']}: detail evidence of the pairs compared (copy limits: changed <= 0.22, scattered"
                " <= 0.016)"
            )
            print("| label | compared | changed min..max | scattered min..max |")
            print("|---|---|---|---|")
            for label, e in r["evidence"].items():
                print(
                    f"| {label} | {e['compared']} | {e['changed_min']:.3f}..{e['changed_max']:.3f} | "
                    f"{e['scattered_min']:.4f}..{e['scattered_max']:.4f} |"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
