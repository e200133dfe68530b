"""Shared fixtures: real photos turned into a labelled near-duplicate set, the real CNN, temporary databases."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import generate
from tests.helpers import BENCH_DATA

# The desktop trash of the whole test session: never the user's own. Set before anything imports send2trash, which
# reads XDG_DATA_HOME once, when it is first imported.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="dupwatch-tests-xdg-")
# Likewise the cache of frozen CNN graphs (hashing.inference): built once per test session, shared by the processes
# the tests start, never the user's own.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dupwatch-tests-cache-")


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Four real photos with every variant, two split scenes (hard negatives) and the bad files; 512 px."""
    out = tmp_path_factory.mktemp("photos")
    truth = generate(out, size=512, photos=("chelsea", "coffee", "astronaut", "camera"), split=("gravel", "grass"))
    return out / "images", truth


@pytest.fixture(scope="session")
def embedder():
    from dupwatch.hashing.embedding import default_embedder

    return default_embedder()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config(db=tmp_path / "state" / "dupwatch.db", workers=0)


@pytest.fixture(scope="session")
def bench_truth() -> tuple[Path, dict]:
    truth_path = BENCH_DATA / "truth.json"
    if not truth_path.exists():
        pytest.skip(f"bench-data not present at {BENCH_DATA}")
    truth = json.loads(truth_path.read_text())
    return truth_path.parent / truth["root"], truth
