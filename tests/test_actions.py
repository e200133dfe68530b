"""Keeping the best shot and moving the rest away: keeper rules, resolve/undo byte for byte, refusals, ignore."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import ImageFilter

from dupwatch.daemon.actions import execute, plan, undo
from dupwatch.daemon.cli import main
from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import exif_bytes, load_photo
from dupwatch.daemon.keeper import KeeperPolicy, choose, parse_rules
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.records import FileStatus
from dupwatch.daemon.store import ActionMode, Store


def _tree(root: Path) -> dict[str, str]:
    """Every file under root (links too) -> digest of its bytes."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """A burst (one sharp frame, two blurred), a photo with a downscaled copy, and an unrelated photo."""
    root = tmp_path / "album"
    (root / "burst").mkdir(parents=True)
    (root / "trip").mkdir()
    cat = load_photo("chelsea").resize((900, 600))
    cat.save(root / "burst" / "frame2.jpg", quality=92, exif=exif_bytes())
    for n, radius in ((1, 2.5), (3, 1.8)):
        cat.filter(ImageFilter.GaussianBlur(radius)).save(root / "burst" / f"frame{n}.jpg", quality=92)
    coffee = load_photo("coffee").resize((1200, 800))
    coffee.save(root / "trip" / "coffee.jpg", quality=90)
    coffee.resize((600, 400)).save(root / "trip" / "coffee_small.jpg", quality=95)
    load_photo("astronaut").save(root / "trip" / "astronaut.jpg", quality=90)
    return root


def _scan(cfg: Config, embedder, root: Path) -> Store:
    store = Store(cfg.db)
    with open_pipeline(cfg, store, embedder) as p:
        p.scan([root])
    return store


def _group_with(store: Store, name: str) -> list:
    for _, members in store.read.groups():
        if any(m.path.endswith(name) for m in members):
            return members
    raise AssertionError(f"no group holds {name}")


def test_keeper_prefers_the_sharp_frame_and_the_large_original(album: Path, cfg: Config, embedder) -> None:
    store = _scan(cfg, embedder, album)
    burst = choose(_group_with(store, "frame2.jpg"))
    assert burst.keeper.path.endswith("frame2.jpg") and "sharpness" in burst.reason
    trip = choose(_group_with(store, "coffee.jpg"))
    assert trip.keeper.path.endswith("trip/coffee.jpg") and "resolution" in trip.reason
    # size before resolution would pick the larger file instead: the order of criteria is honoured
    by_size = choose(_group_with(store, "coffee.jpg"), KeeperPolicy(rules=parse_rules("size")))
    assert by_size.keeper.path == max(_group_with(store, "coffee.jpg"), key=lambda r: r.size).path


def test_reference_folders_are_never_proposed_for_removal(album: Path, cfg: Config, embedder) -> None:
    store = _scan(cfg, embedder, album)
    d = choose(_group_with(store, "coffee.jpg"), KeeperPolicy(reference_dirs=(str(album / "trip"),)))
    assert not d.remove and d.reason == "in a reference folder"


@pytest.mark.parametrize("mode", [ActionMode.MOVE, ActionMode.HARDLINK, ActionMode.SYMLINK])
def test_resolve_then_undo_restores_every_byte_and_path(
    mode: str, album: Path, cfg: Config, embedder, tmp_path: Path
) -> None:
    store = _scan(cfg, embedder, album)
    before = _tree(album)
    quarantine = tmp_path / "quarantine"
    steps = plan(store, mode, quarantine)
    assert {Path(s.file.path).name for s in steps} == {"frame1.jpg", "frame3.jpg", "coffee_small.jpg"}
    assert all(s.refused is None for s in steps)
    out = execute(store, steps, mode, quarantine)
    assert (out.moved, out.failed, out.refused) == (3, [], [])
    for s in steps:
        assert Path(s.dst).read_bytes() and store.files.get(s.file.id).status == FileStatus.RESOLVED
        if mode == ActionMode.MOVE:
            assert not os.path.lexists(s.file.path)
        elif mode == ActionMode.HARDLINK:
            assert os.path.samefile(s.file.path, s.keeper.path)
        else:
            assert os.readlink(s.file.path) == s.keeper.path
    assert Path(steps[0].dst) == quarantine / steps[0].file.path.lstrip("/")  # full path kept: no collisions
    assert store.read.groups() == []
    back = undo(store, out.action_id)
    assert (back.restored, back.refusals, back.complete) == (3, [], True)
    assert _tree(album) == before
    assert not any(os.path.islink(p) for p in album.rglob("*"))
    assert len(store.read.groups()) == 2
    assert not _tree(quarantine)


def test_trash_mode_and_its_undo(album: Path, cfg: Config, embedder, tmp_path: Path) -> None:
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"  # the session's own (tests/conftest.py)
    store = _scan(cfg, embedder, album)
    before = _tree(album)
    steps = plan(
        store,
        ActionMode.TRASH,
        None,
        groups=[store.graph.group_of(store.files.by_path(str(album / "trip/coffee.jpg")).id)],
    )
    out = execute(store, steps, ActionMode.TRASH, None)
    assert out.moved == 1 and not out.failed and not (album / "trip/coffee_small.jpg").exists()
    assert (trash / "files/coffee_small.jpg").exists()
    assert undo(store, out.action_id).complete
    assert _tree(album) == before
    assert not list((trash / "info").glob("coffee_small*"))  # the trash's record went with the file


def test_changed_files_and_paths_outside_the_roots_are_refused(
    album: Path, cfg: Config, embedder, tmp_path: Path
) -> None:
    store = _scan(cfg, embedder, album)
    target = album / "trip" / "coffee_small.jpg"
    with open(target, "ab") as f:
        f.write(b"\0")  # edited after the scan
    steps = {Path(s.file.path).name: s for s in plan(store, ActionMode.MOVE, tmp_path / "q")}
    assert "changed since it was scanned" in steps["coffee_small.jpg"].refused
    execute(store, list(steps.values()), ActionMode.MOVE, tmp_path / "q")
    assert target.exists()
    with store.atomic():  # the burst folder is no longer a root dupwatch was given
        store.db.execute("DELETE FROM roots")
        store.decisions.add_roots([str(album / "trip")])
    with store.atomic():
        store.db.execute("UPDATE files SET status = 'ok'")
        store.graph.regroup([r for (r,) in store.db.execute("SELECT id FROM files")])
    refused = [s for s in plan(store, ActionMode.MOVE, tmp_path / "q2") if s.file.path.startswith(str(album / "burst"))]
    # the burst's keeper is outside the roots too: the whole group is refused, naming it
    assert refused and all("keeper" in (s.refused or "") and "outside the scanned roots" in s.refused for s in refused)


def test_undo_refuses_when_the_place_is_taken(album: Path, cfg: Config, embedder, tmp_path: Path) -> None:
    store = _scan(cfg, embedder, album)
    steps = plan(store, ActionMode.MOVE, tmp_path / "q")
    out = execute(store, steps, ActionMode.MOVE, tmp_path / "q")
    taken = Path(steps[0].file.path)
    taken.write_bytes(b"a new photo the user saved here meanwhile")
    back = undo(store, out.action_id)
    assert len(back.refusals) == 1 and "taken" in back.refusals[0] and not back.complete
    assert taken.read_bytes() == b"a new photo the user saved here meanwhile"
    assert Path(steps[0].dst).exists()  # still safe in the quarantine
    assert all(Path(s.file.path).exists() for s in steps[1:])


def test_cli_dry_run_resolve_undo_and_journal(album: Path, tmp_path: Path) -> None:
    db, q = str(tmp_path / "c.db"), tmp_path / "q"
    run = CliRunner().invoke
    assert run(main, ["--db", db, "-q", "scan", str(album), "--workers", "0"]).exit_code == 0
    before = _tree(album)
    dry = run(main, ["--db", db, "resolve", "--move-to", str(q), "--dry-run"])
    assert dry.exit_code == 0 and "would move" in dry.stdout and _tree(album) == before and not q.exists()
    assert run(main, ["--db", db, "resolve"]).exit_code == 2  # no quarantine named: refuse, move nothing
    asked = run(main, ["--db", db, "resolve", "--move-to", str(q)])  # every group, no terminal, no --yes
    assert asked.exit_code == 2 and "--yes" in asked.stderr and _tree(album) == before
    done = run(main, ["--db", db, "resolve", "--move-to", str(q), "--yes"])
    assert done.exit_code == 0, done.output
    assert len(_tree(q)) == 3 and "action #1" in done.stderr
    journal = run(main, ["--db", db, "actions"])
    assert journal.exit_code == 0 and journal.stdout.startswith("#1 move")
    assert run(main, ["--db", db, "undo"]).exit_code == 0
    assert _tree(album) == before
    assert run(main, ["--db", db, "undo"]).exit_code == 1  # nothing left to undo


def test_ignored_pairs_stay_ignored_after_rescans(album: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "i.db")
    run = CliRunner().invoke
    assert run(main, ["--db", db, "-q", "scan", str(album), "--workers", "0"]).exit_code == 0
    store = Store(Path(db))
    frame = store.files.by_path(str(album / "burst/frame1.jpg"))
    assert frame is not None
    gid = store.graph.group_of(frame.id)
    assert len(store.read.groups()) == 2 and gid is not None
    assert run(main, ["--db", db, "ignore", "--group", str(gid)]).exit_code == 0
    a, b = str(album / "trip/coffee.jpg"), str(album / "trip/coffee_small.jpg")
    assert run(main, ["--db", db, "ignore", a, b]).exit_code == 0
    assert Store(Path(db)).read.groups() == []
    shutil.move(album / "burst", album / "burst-renamed")  # renamed and touched: same content, new paths
    for p in (album / "burst-renamed").iterdir():
        os.utime(p)
    assert run(main, ["--db", db, "-q", "scan", str(album), "--workers", "0"]).exit_code == 0
    assert Store(Path(db)).read.groups() == []
    assert run(main, ["--db", db, "ignore", a]).exit_code == 2
