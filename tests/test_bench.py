"""Smoke tests of every benchmark runner on tiny inputs (the benchmarks themselves are not part of the suite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bench import peers
from bench.accuracy import components, recorded_pairs, scan, sweep
from bench.plot import precision_recall_png
from bench.scoring import relative, score
from bench.turns import turned_recall
from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import generate

pytestmark = pytest.mark.slow  # subprocesses and benchmark runners


def test_scoring_matches_hand_counts() -> None:
    truth = {
        "groups": [["a", "b", "c"], ["d", "e"]],
        "transform": {
            "a": "original",
            "b": "jpeg",
            "c": "flip",
            "d": "original",
            "e": "crop",
            "x": "singleton",
            "y": "singleton",
            "bad.jpg": "bad_empty",
        },
        "originals": {"0": "a", "1": "d"},
        "hard_negatives": [["x", "y", "lookalike"]],
        "bad": ["bad.jpg"],
    }
    s = score(truth, [["a", "b"], ["x", "y", "bad.jpg"]])
    assert (s.predicted_pairs, s.true_pairs) == (4, 4)
    assert s.precision == pytest.approx(1 / 4) and s.recall == pytest.approx(1 / 4)
    assert s.hard_negatives_wrong == 1 and s.bad_in_groups == 1
    assert s.per_transform["jpeg"] == (1, 1) and s.per_transform["flip"] == (0, 1)
    assert score(truth, [["a", "b", "c"], ["d", "e"]], exclude=frozenset({"flip"})).f1 == 1.0
    assert sorted(map(sorted, components([("a", "b"), ("b", "c"), ("d", "e")]))) == [["a", "b", "c"], ["d", "e"]]


def test_datagen_writes_a_truth_file_in_the_shared_format(tmp_path: Path) -> None:
    truth = generate(tmp_path, size=(160, 400), photos=("chelsea", "coffee"), split=("gravel",))
    on_disk = json.loads((tmp_path / "truth.json").read_text())
    assert on_disk == truth and truth["root"] == "images"
    assert {"groups", "singletons", "bad", "transform", "hard_negatives", "originals"} <= set(truth)
    assert all((tmp_path / "images" / p).exists() for p in truth["transform"])
    longest = [max(Image.open(tmp_path / "images" / g[0]).size) for g in truth["groups"]]
    assert longest == [160, 400]  # sizes used in turn


def test_accuracy_sweep_and_plot(photo_set, embedder, tmp_path: Path) -> None:
    from dataclasses import replace

    root, truth = photo_set
    cfg = replace(Config(db=tmp_path / "s.db", workers=0), cosine_threshold=0.999, verify_inliers=0, grey_inliers=0)
    pairs = recorded_pairs(scan(cfg, root, embedder))
    sw = sweep(pairs, truth, root, grey_inliers=40, verify_low=0.5)
    default = sw[(0.8, 25, 40)]
    assert default.precision == 1.0 and default.recall == 1.0
    assert sw[(0.6, 0, 40)].precision <= default.precision  # looser settings never gain precision
    out = tmp_path / "sweep.png"
    precision_recall_png({"photos": sw}, out, 25, 40)
    assert Image.open(out).size == (900, 620)


def test_speed_runner(tmp_path: Path) -> None:
    from bench.speed import run

    figures = run(3, tmp_path / "cam", workers=0)
    assert figures["decode"] > 0 and figures["end_to_end"] > 0
    assert figures["cnn_passes_per_photo"] >= 1.0  # every new photo is embedded at least once
    assert Image.open(next((tmp_path / "cam").glob("*.jpg"))).size == (4032, 3024)


def test_scale_runner(tmp_path: Path) -> None:
    from bench.scale import run, table

    figures = run(600, tmp_path)
    assert figures["hnsw_recall_at_10"] > 0.5 and figures["index_mb"] > 0
    assert "HNSW query" in table(figures)


def test_latency_and_storm_runners(tmp_path: Path) -> None:
    from bench.latency import latency, storm

    lat = latency(2, tmp_path)
    assert len(lat) == 2 and all(0 < x < 30 for x in lat)
    written, elapsed = storm(60, "tinynet", tmp_path)
    assert elapsed >= written > 0


def test_peer_baseline_and_installed_peers(photo_set) -> None:
    root, truth = photo_set
    base = peers.ahash_baseline(root)
    s = score(truth, relative(base.groups, root))
    assert base.files == len(truth["transform"]) and s.precision > 0.9 and s.recall < 1.0
    assert peers.imagededup_cnn().unavailable
    if shutil.which("findimagedupes"):
        assert not peers.findimagedupes(root).unavailable
    if (peers.PEERS_VENV / "bin" / "python").exists():
        run = peers.imagededup(root, "PHash")
        assert run.unavailable is None and run.groups


def test_turns_runner_groups_every_turn_of_the_clock(embedder) -> None:
    """bench.turns on one picture: the clock, whose turned copies look alike unturned (4 of its 7 were missed)."""
    assert turned_recall(("clock",), 320, embedder) == (7, [])


def test_cores_runner(photo_set, tmp_path: Path) -> None:
    from bench.cores import Setup, table

    root, truth = photo_set
    rows = table(root, truth, [Setup(1, "cpu", 0), Setup(2, "cpu", 2)], 1, tmp_path)
    assert len(rows) == 4 and rows[2].startswith("| 1 | cpu | 0 |") and rows[3].startswith("| 2 | cpu | 2 |")
    assert all(r.endswith("| yes |") for r in rows[2:])  # the same groups on one core in-process as on two workers
