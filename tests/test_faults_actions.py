"""resolve and undo under faults: a keeper that went away, kill -9 at random instants, a full disk, a read-only
quarantine, exact counts, the prompt before acting on every group (issue: "Nothing lost, nothing wrongly touched").

The kill runs are random: DUPWATCH_FAULT_RUNS sets how many (a few in CI; `DUPWATCH_FAULT_RUNS=50 ./quickstart test
tests/test_faults_actions.py` for the long run). Every run ends with every photo, byte for byte, where it was."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dupwatch.daemon.actions import quarantine_path
from dupwatch.daemon.cli import main
from dupwatch.daemon.config import Config
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.safefs import PARTIAL
from dupwatch.daemon.store import ItemState, Store
from dupwatch.hashing.embedding import tiny_embedder
from tests.helpers import noise_png, run_on_terminal, tmpfs, tree_digest

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("DUPWATCH_FAULT_RUNS", "4"))


def _scan(db: Path, root: Path) -> None:
    store = Store(db)
    with open_pipeline(Config(db=db, workers=0, model="tinynet"), store, tiny_embedder()) as p:
        p.scan([root])
    store.close()


def _cli(db: Path, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


# -- 1. the keeper is checked right before anything moves ----------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two byte-identical photos, scanned: a.jpg is the keeper (first by path), b.jpg the one to move."""
    root = tmp_path / "photos"
    root.mkdir()
    data = noise_png(1, 96)
    (root / "a.png").write_bytes(data)
    (root / "b.png").write_bytes(data)
    db = tmp_path / "d.db"
    _scan(db, root)
    return root, db


@pytest.mark.parametrize("mode", ["--move-to", "--hardlink"])
def test_a_keeper_that_is_gone_refuses_its_group(pair: tuple[Path, Path], tmp_path: Path, mode: str) -> None:
    root, db = pair
    (root / "a.png").unlink()
    q = tmp_path / "q"
    args = ["--db", str(db), "resolve", "--move-to", str(q), "--yes"]
    r = CliRunner().invoke(main, args + (["--hardlink"] if mode == "--hardlink" else []))
    assert r.exit_code == 1
    assert "keeper" in r.stdout and "no longer exists" in r.stdout
    assert "nothing to do: all 1 files refused" in r.stderr
    assert (root / "b.png").read_bytes() == noise_png(1, 96)
    assert not q.exists() or not _files(q)
    u = CliRunner().invoke(main, ["--db", str(db), "undo"])  # no action was recorded, so none reports "undone"
    assert u.exit_code == 1 and "nothing to undo" in u.stderr


@pytest.mark.parametrize("damage", ["symlink", "changed", "outside"])
def test_a_keeper_that_changed_refuses_its_group(pair: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    root, db = pair
    keeper = root / "a.png"
    if damage == "symlink":  # the keeper became a link to a file elsewhere
        outside = tmp_path / "elsewhere.png"
        shutil.copy2(keeper, outside)
        keeper.unlink()
        keeper.symlink_to(outside)
        reason = "symbolic link"
    elif damage == "changed":
        keeper.write_bytes(noise_png(2, 96))
        reason = "changed since it was scanned"
    else:
        store = Store(db)
        with store.atomic():  # the folder is no longer one dupwatch was asked to look at
            store.db.execute("DELETE FROM roots")
            store.decisions.add_roots([str(root / "b.png")])
        store.close()
        reason = "outside the scanned roots"
    r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--move-to", str(tmp_path / "q"), "--yes"])
    assert r.exit_code == 1 and reason in r.stdout and "keeper" in r.stdout
    assert (root / "b.png").read_bytes() == noise_png(1, 96)


def test_the_file_to_move_is_never_a_symlink(pair: tuple[Path, Path], tmp_path: Path) -> None:
    root, db = pair
    target = root / "b.png"
    target.unlink()
    target.symlink_to(root / "a.png")
    r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--move-to", str(tmp_path / "q"), "--yes"])
    assert r.exit_code == 1 and "symbolic link" in r.stdout
    assert target.is_symlink() and (root / "a.png").is_file()


# -- 6. acting on every group asks first; a dry run needs no target --------------------------------------------------


def test_dry_run_needs_no_quarantine(pair: tuple[Path, Path]) -> None:
    root, db = pair
    r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--dry-run"])
    assert r.exit_code == 0 and "would move" in r.stdout and "1 files would be moved" in r.stderr
    assert sorted(p.name for p in root.iterdir()) == ["a.png", "b.png"]


def _on_a_terminal(db: Path, q: Path, answer: bytes) -> str:
    """Run `resolve` (every group) on a pseudo-terminal, answer its question, return what it printed."""
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "resolve", "--move-to", str(q)]
    return run_on_terminal(cmd, REPO, answer=answer, wait_for=b"Go ahead?")


def test_on_a_terminal_resolve_shows_the_plan_and_asks(pair: tuple[Path, Path], tmp_path: Path) -> None:
    root, db = pair
    q = tmp_path / "q"
    said = _on_a_terminal(db, q, b"n\n")
    assert "1 files (" in said and "would be moved to" in said and "nothing moved" in said
    assert (root / "b.png").exists()
    said = _on_a_terminal(db, q, b"y\n")
    assert "1 files moved" in said and not (root / "b.png").exists()
    assert quarantine_path(q, str(root / "b.png")).exists()


# -- 2. kill -9 at random instants ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """70 distinct photos, each in three byte-identical copies (140 files to move), scanned; a pristine copy of
    the folder and the database to restore before each run."""
    base = tmp_path_factory.mktemp("library")
    pristine = base / "pristine"
    for n in range(70):
        data = noise_png(1000 + n, 64)
        for folder in ("camera", "backup", "shared"):
            (pristine / folder).mkdir(parents=True, exist_ok=True)
            (pristine / folder / f"img{n:03d}.png").write_bytes(data)
    work = base / "photos"
    shutil.copytree(pristine, work)
    db = base / "pristine.db"
    _scan(db, work)
    return work, db, tree_digest(pristine)


def _restore(library: tuple[Path, Path, dict[str, str]], tmp: Path) -> Path:
    work, db, _ = library
    shutil.rmtree(work)
    shutil.copytree(work.parent / "pristine", work)
    run_db = tmp / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(run_db) + suffix).unlink(missing_ok=True)
    shutil.copy2(db, run_db)
    return run_db


def _accounted(work: Path, q: Path, db: Path, digest: dict[str, str]) -> None:
    """Every photo is byte for byte at its place, or in the quarantine with a journal entry that undo acts on."""
    store = Store(db, readonly=True)
    act = store.journal.action()
    in_flight = {i.src for i in act.items if i.state in (ItemState.MOVING, ItemState.DONE)} if act else set()
    store.close()
    for rel, sha in digest.items():
        src = work / rel
        here = src.is_file() and tree_digest(src.parent).get(src.name) == sha
        away = quarantine_path(q, str(src))
        there = away.is_file() and tree_digest(away.parent).get(away.name) == sha and str(src) in in_flight
        assert here or there, f"{rel} is neither at its place nor journaled in the quarantine"


def _undo_until_done(db: Path, rng: random.Random) -> None:
    for attempt in range(8):
        proc = _cli(db, "undo")
        if attempt < 3 and rng.random() < 0.5:  # undo is killed too, now and then
            time.sleep(rng.uniform(0.0, 1.2))
            proc.kill()
            proc.wait()
            continue
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0 or "nothing to undo" in err:
            return
        raise AssertionError(f"undo failed: {err}")
    raise AssertionError("undo never finished")


def test_kill_9_during_resolve_and_undo_loses_nothing(
    library: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    work, _, digest = library
    q = tmp_path / "q"
    db = _restore(library, tmp_path)  # an unkilled run first: how long a resolve takes, and that it works
    t = time.monotonic()
    proc = _cli(db, "resolve", "--move-to", str(q), "--yes")
    _, err = proc.communicate(timeout=300)
    whole = time.monotonic() - t
    assert proc.returncode == 0 and "140 files moved, 0 refused, 0 failed" in err, err
    assert len(_files(q)) == 140
    _undo_until_done(db, random.Random(0))
    assert tree_digest(work) == digest and not _files(q)

    rng = random.Random(int(os.environ.get("DUPWATCH_FAULT_SEED", "7")))
    for run in range(RUNS):
        shutil.rmtree(q, ignore_errors=True)
        db = _restore(library, tmp_path)
        proc = _cli(db, "resolve", "--move-to", str(q), "--yes")
        time.sleep(rng.uniform(0.0, whole * 1.1))
        proc.kill()
        proc.wait()
        _accounted(work, q, db, digest)
        _undo_until_done(db, rng)
        assert tree_digest(work) == digest, f"run {run}: the tree differs after undo"
        assert not _files(q), f"run {run}: files left in the quarantine: {_files(q)[:3]}"
        store = Store(db, readonly=True)
        assert store.journal.action() is None  # every action is undone: nothing is reported half-done
        store.close()


# -- 3, 4. a full disk and a read-only quarantine --------------------------------------------------------------------


def test_a_full_quarantine_leaves_no_partial_files_and_counts_exactly(
    library: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    work, _, digest = library
    db = _restore(library, tmp_path)
    with tmpfs(tmp_path / "small", size="200k") as q:  # another filesystem: copies, and it fills up
        r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--move-to", str(q), "--yes"])
        assert r.exit_code == 1
        moved = [p for p in _files(q) if not p.name.endswith(PARTIAL)]
        assert not [p for p in _files(q) if p.name.endswith(PARTIAL)]  # no partial copy is left behind
        assert 0 < len(moved) < 140
        assert f"{len(moved)} files moved, 0 refused, {140 - len(moved)} failed" in r.stderr
        assert "No space left" in r.stdout
        for p in moved:  # what is in the quarantine is whole
            src = "/" + str(p.relative_to(q))
            assert tree_digest(p.parent)[p.name] == digest[str(Path(src).relative_to(work))]
        u = CliRunner().invoke(main, ["--db", str(db), "undo"])
        assert u.exit_code == 0, u.output
    assert tree_digest(work) == digest


def test_a_read_only_quarantine_moves_nothing_and_says_so(
    library: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    work, _, digest = library
    db = _restore(library, tmp_path)
    with tmpfs(tmp_path / "ro", readonly=True) as q:
        r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--move-to", str(q / "sub"), "--yes"])
    assert r.exit_code == 1
    assert "0 files moved, 0 refused, 140 failed" in r.stderr
    assert "Read-only file system" in r.stdout
    assert tree_digest(work) == digest


def test_trash_undo_takes_back_its_own_file_not_an_older_one_from_the_same_place(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    root, db = pair
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"  # the session's own (tests/conftest.py)
    (trash / "files").mkdir(parents=True, exist_ok=True)
    (trash / "info").mkdir(exist_ok=True)
    (trash / "files" / "b.png").write_bytes(b"an older b.png the user threw away last year")
    (trash / "info" / "b.png.trashinfo").write_text(
        f"[Trash Info]\nPath={root / 'b.png'}\nDeletionDate=2099-01-01T00:00:00\n"  # even a 'newer' date
    )
    original = (root / "b.png").read_bytes()
    r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--trash", "--yes"])
    assert r.exit_code == 0, r.output
    assert not (root / "b.png").exists()
    u = CliRunner().invoke(main, ["--db", str(db), "undo"])
    assert u.exit_code == 0, u.output
    assert (root / "b.png").read_bytes() == original
    assert (trash / "files" / "b.png").read_bytes() == b"an older b.png the user threw away last year"
