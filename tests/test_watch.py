"""The live watcher with a real observer on temporary folders: complete files only, renames, deletions,
overwrites, sync-client temporary names, and an event storm."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dupwatch.daemon.config import Config
from dupwatch.daemon.records import FileStatus
from dupwatch.daemon.service import Service
from dupwatch.daemon.store import Store
from dupwatch.hashing.fingerprint import content_hash
from tests.helpers import ServiceThread, noise_png, photo_jpeg, wait_until, write_slowly


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    d = tmp_path / "camera"
    d.mkdir()
    return d


def _service(cfg: Config, root: Path, embedder, **kw) -> Service:
    return Service(replace(cfg, settle_seconds=0.4, **kw), [root], embedder)


def _rec(cfg: Config, path: Path):
    return Store(cfg.db, readonly=True).files.by_path(str(path))


def test_a_slowly_written_file_is_processed_once_after_it_is_complete(watched, cfg, embedder) -> None:
    data = photo_jpeg()
    with ServiceThread(_service(cfg, watched, embedder)) as st:
        target = watched / "IMG_0001.jpg"
        write_slowly(target, data, chunks=6, pause=0.25)  # 1.5 s of writing with pauses shorter than settle
        assert wait_until(lambda: _rec(cfg, target) is not None, 20)
        rec = _rec(cfg, target)
        assert rec.status == FileStatus.OK and rec.content_hash == content_hash(data)
        time.sleep(1.0)
        assert st.service.status.processed == 1


def test_a_truncated_file_that_stays_truncated_is_recorded_as_an_error(watched, cfg, embedder) -> None:
    with ServiceThread(_service(cfg, watched, embedder, incomplete_grace=1.0)):
        target = watched / "broken.jpg"
        target.write_bytes(photo_jpeg()[:5000])
        assert wait_until(lambda: _rec(cfg, target) is not None, 20)
        assert "truncated" in _rec(cfg, target).error


def test_sync_client_temporary_names_are_ignored_until_renamed(watched, cfg, embedder) -> None:
    with ServiceThread(_service(cfg, watched, embedder)):
        part = watched / "IMG_0002.jpg.part"
        part.write_bytes(photo_jpeg("coffee"))
        (watched / ".syncthing.IMG_0003.jpg.tmp").write_bytes(photo_jpeg("rocket"))
        time.sleep(1.0)
        assert Store(cfg.db, readonly=True).read.counts()["files"] == 0
        final = watched / "IMG_0002.jpg"
        os.rename(part, final)
        assert wait_until(lambda: _rec(cfg, final) is not None, 20)
        assert Store(cfg.db, readonly=True).read.counts()["files"] == 1


def test_moves_deletions_and_overwrites_are_followed(watched, cfg, embedder) -> None:
    with ServiceThread(_service(cfg, watched, embedder)) as st:
        a, b = watched / "a.jpg", watched / "b.jpg"
        a.write_bytes(photo_jpeg("chelsea"))
        b.write_bytes(photo_jpeg("chelsea", quality=60))  # a re-encode: a near duplicate
        assert wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["groups"] == 1, 20)
        first = _rec(cfg, b)
        (watched / "sub").mkdir()
        moved = watched / "sub" / "b-moved.jpg"
        os.rename(b, moved)
        assert wait_until(lambda: _rec(cfg, moved) is not None, 10)
        assert _rec(cfg, moved).id == first.id  # fingerprints kept, no re-embedding
        assert Store(cfg.db, readonly=True).read.counts()["groups"] == 1
        moved.write_bytes(photo_jpeg("coffee"))  # overwritten in place with another photo
        assert wait_until(lambda: _rec(cfg, moved).content_hash == content_hash(photo_jpeg("coffee")), 10)
        assert wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["groups"] == 0, 10)
        a.unlink()
        assert wait_until(lambda: _rec(cfg, a).status == FileStatus.DELETED, 10)
        events = [e["event"] for e in st.service._last_events]
        assert {"duplicate", "moved", "deleted"} <= set(events)
    lines = cfg.events_path.read_text().splitlines()
    assert any('"duplicate"' in line and "a.jpg" in line for line in lines)


def test_duplicate_hook_gets_the_event_as_json(watched, cfg, embedder, tmp_path: Path) -> None:
    out = tmp_path / "hook.json"
    hook = f"sh -c 'cat > {out}'"
    with ServiceThread(_service(cfg, watched, embedder, on_duplicate=hook)):
        (watched / "x.jpg").write_bytes(photo_jpeg("astronaut"))
        time.sleep(0.8)
        (watched / "y.jpg").write_bytes(photo_jpeg("astronaut", quality=55))
        assert wait_until(lambda: out.exists() and out.stat().st_size > 0, 20)
    import json

    event = json.loads(out.read_text())
    assert event["event"] == "duplicate" and event["matches"][0]["path"].endswith(".jpg")


def test_a_similar_shot_is_journaled_as_such_and_runs_no_duplicate_hook(watched, cfg, embedder, tmp_path) -> None:
    import json
    import random

    from bench.lookalikes import moved_subject
    from dupwatch.daemon.demo import jpeg_bytes, load_photo, scale_to

    out = tmp_path / "hook.log"
    one, two = moved_subject(scale_to(load_photo("grass"), 900), load_photo("chelsea"), random.Random(1))
    with ServiceThread(_service(cfg, watched, embedder, on_duplicate=f"cat >> '{out}'; echo >> '{out}'")) as st:
        (watched / "burst_1.jpg").write_bytes(jpeg_bytes(one))
        time.sleep(0.8)
        (watched / "burst_2.jpg").write_bytes(jpeg_bytes(two))
        assert wait_until(lambda: any(e["event"] == "similar" for e in st.service._last_events), 20)
        time.sleep(1.0)
        assert not out.exists()  # another shot of the scene is not a duplicate: no hook
        (watched / "burst_2_copy.jpg").write_bytes(jpeg_bytes(two, 60))
        assert wait_until(lambda: out.exists() and out.stat().st_size > 0, 20)
    [event] = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert event["event"] == "duplicate" and event["path"].endswith("burst_2_copy.jpg")
    tiers = {m["path"].rsplit("/", 1)[1]: m["tier"] for m in event["matches"]}
    assert tiers["burst_2.jpg"] == "copy" and tiers.get("burst_1.jpg", "similar") == "similar"
    assert st.service.status.duplicates == 1


@pytest.mark.slow
def test_an_event_storm_of_10000_files_is_recorded_in_full(watched, cfg, tmp_path: Path) -> None:
    from dupwatch.hashing.embedding import tiny_embedder

    n = 10_000
    # a small event queue forces the overflow path: the reconcile must catch what the queue dropped
    storm = replace(cfg, workers=2, batch_size=64, queue_size=500, reconcile_interval=3600)
    with ServiceThread(Service(storm, [watched], tiny_embedder())) as st:
        for i in range(n):
            (watched / f"burst_{i:05d}.png").write_bytes(noise_png(i))
        assert wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["files"] == n, 300, every=1.0), Store(
            cfg.db, readonly=True
        ).counts()
        assert st.service.status.reconciles >= 2  # the start, and at least one overflow
    assert Store(cfg.db, readonly=True).db.execute("SELECT count(DISTINCT path) FROM files").fetchone()[0] == n


def test_polling_observer_for_network_filesystems(watched, cfg, embedder) -> None:
    service = Service(replace(cfg, settle_seconds=0.3), [watched], embedder, polling=True)
    with ServiceThread(service):
        target = watched / "nfs.jpg"
        target.write_bytes(photo_jpeg("rocket"))
        assert wait_until(lambda: _rec(cfg, target) is not None, 20)
