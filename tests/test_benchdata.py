"""Grouping scored on ../shared/bench-data against its truth.json (skipped where the set is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dupwatch.daemon.config import Config
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.reports import build_report, to_json
from dupwatch.daemon.store import Store
from tests.helpers import BENCH_DATA


def test_bench_data_precision_and_recall(bench_truth, embedder, tmp_path: Path) -> None:
    root, truth = bench_truth
    cfg = Config(db=tmp_path / "bench.db", workers=2)
    store = Store(cfg.db)
    with open_pipeline(cfg, store, embedder) as p:
        p.scan([root])
    out = tmp_path / "groups.json"
    out.write_text(json.dumps(to_json(build_report(store))))
    scores = tmp_path / "scores.json"
    subprocess.run(
        [sys.executable, str(BENCH_DATA / "score.py"), str(BENCH_DATA / "truth.json"), str(out), "--json", str(scores)],
        check=True,
        capture_output=True,
    )
    s = json.loads(scores.read_text())
    assert s["precision"] >= 0.98 and s["recall"] >= 0.95, (s["precision"], s["recall"])
    assert not s["hard_negatives_wrong"] and not s["bad_in_groups"], (s["hard_negatives_wrong"], s["bad_in_groups"])
    report = build_report(store)
    grouped = {m.path for g in report.groups for m in g.members}
    bad = {str(root / b) for b in truth["bad"]}
    assert not grouped & bad
    assert {e.path for e in report.errors} == bad
