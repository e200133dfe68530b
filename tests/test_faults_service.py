"""Faults around the work: a decoding worker killed, the database damaged or deleted (under the daemon and under
every command), and a first reconcile longer than systemd's timeouts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dupwatch.daemon.config import Config
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.records import FileStatus
from dupwatch.daemon.store import Store
from dupwatch.daemon.workers import WORKER_DIED
from dupwatch.hashing.embedding import tiny_embedder
from tests.helpers import dying_fingerprinter, noise_png, run_python, wait_until

REPO = Path(__file__).resolve().parents[1]


# -- 13. a decoding worker dies ---------------------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_scan_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(24):
        (root / f"img{i:02d}.png").write_bytes(noise_png(200 + i))
    (root / "once.png").write_bytes(noise_png(300))  # kills its worker the first time, decodes on the retry
    (root / "poison.png").write_bytes(noise_png(301))  # kills every worker that touches it
    db = tmp_path / "d.db"
    store = Store(db)
    cfg = Config(db=db, workers=2, model="tinynet", batch_size=4)
    with open_pipeline(cfg, store, tiny_embedder(), fingerprinter=dying_fingerprinter) as p:
        stats = p.scan([root])
    assert stats.seen == 26 and stats.errors == 1
    errors = {os.path.basename(r.path): r.error for r in store.read.errors()}
    assert errors == {"poison.png": WORKER_DIED}
    once = store.files.by_path(str(root / "once.png"))
    assert once is not None and once.status == FileStatus.OK
    assert store.read.counts()["files"] == 25


# -- 14. a damaged database -------------------------------------------------------------------------------------------


def _cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("damage", ["empty", "garbage"])
def test_every_command_gives_one_line_on_a_damaged_database(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "d.db"
    db.write_bytes(b"" if damage == "empty" else os.urandom(8192))
    photo = tmp_path / "p.png"
    photo.write_bytes(noise_png(1))
    commands = [["status"], ["report"], ["report", "--format", "json"], ["actions"], ["undo"],
                ["resolve", "--dry-run"], ["ignore", photo, photo], ["query", photo]]  # fmt: skip
    commands.append(["scan", tmp_path])
    for command in commands:
        r = _cli("--db", db, *command)
        assert r.returncode == 1, (command, r.stderr)
        assert "Traceback" not in r.stderr, (command, r.stderr)
        [line] = r.stderr.strip().splitlines()
        assert line.startswith("Error:") and str(db) in line, (command, line)


@pytest.fixture
def daemon(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(noise_png(1))
    config = tmp_path / "c.toml"
    config.write_text('model = "tinynet"\nworkers = 0\nsettle_seconds = 0.2\n')
    db = tmp_path / "d.db"
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "--config", str(config), "watch", str(photos)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = db.with_name("d.db.status.json")
    assert wait_until(lambda: status.exists() and json.loads(status.read_text())["state"] == "watching", 60)
    yield proc, db
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("damage", ["deleted", "truncated", "replaced"])
def test_the_daemon_stops_when_its_database_goes_bad(daemon: tuple[subprocess.Popen[str], Path], damage: str) -> None:
    proc, db = daemon
    if damage == "deleted":
        db.unlink()
    elif damage == "truncated":
        with open(db, "r+b") as f:
            f.truncate(0)
    else:
        other = db.with_name("other.db")
        Store(other).close()
        os.replace(other, db)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1  # non-zero: systemd's Restart=on-failure starts it again
    assert {"deleted": "was deleted", "truncated": "truncated", "replaced": "replaced"}[damage] in err


_KILL_AT_EACH_STATEMENT = """
import os, signal, sqlite3, sys
from pathlib import Path
from dupwatch.daemon.store import Store
connect = sqlite3.connect
n = 0
while True:  # a forked child per instant: it makes d{n}.db and kills itself at its n-th SQL statement
    pid = os.fork()
    if pid == 0:
        def dying_connect(*args, **kwargs):
            conn = connect(*args, **kwargs)
            seen = []
            def trace(sql):
                if len(seen) == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                seen.append(sql)
            conn.set_trace_callback(trace)
            return conn
        sqlite3.connect = dying_connect
        Store(Path(sys.argv[1]) / f"d{n}.db").close()
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    if os.WIFEXITED(status):  # made without reaching statement n: every instant has been tried
        print(n)
        break
    assert os.WTERMSIG(status) == signal.SIGKILL
    n += 1
"""


def test_a_process_killed_while_making_the_database_leaves_none_that_the_next_start_refuses(tmp_path: Path) -> None:
    """Killed at each SQL statement of making a new database in turn (the first: right after the file was
    created), the next open makes or completes it; none is left empty or half-made, nor any unfinished file."""
    instants = int(run_python(_KILL_AT_EACH_STATEMENT, str(tmp_path), cwd=REPO, timeout=None).stdout)
    assert instants > 5
    for n in range(instants):
        db = tmp_path / f"d{n}.db"
        Store(db).close()  # raised StoreError ("0 bytes ... truncated?") after a kill at statement 0
        assert Store(db, readonly=True).read.counts()["files"] == 0
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("d")] == []


def test_only_the_leftovers_of_a_dead_maker_are_swept_never_a_file_that_shares_their_prefix(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names a process that is gone
    leftovers = [f".d.db.new-{dead.pid}", f".d.db.new-{dead.pid}-wal", f".d.db.new-{dead.pid}-shm"]
    kept = [f".d.db.new-{dead.pid}-holiday.jpg", f".d.db.new-{os.getppid()}", ".d.db.new-x"]  # a photo; a live maker
    for name in leftovers + kept:
        (tmp_path / name).write_bytes(b"x")
    Store(tmp_path / "d.db").close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(kept)


def test_a_database_that_cannot_be_made_on_a_full_disk_is_one_error_line_and_leaves_nothing(tmp_path: Path) -> None:
    from tests.helpers import tmpfs

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(noise_png(1, 64))
    with tmpfs(tmp_path / "small", size="24k") as small:  # room for the file, not for its schema
        r = _cli("--db", small / "d.db", "scan", photos)
        assert r.returncode == 1, r.stderr
        assert r.stderr.count("\n") == 1 and "cannot make database" in r.stderr and "full" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert [p.name for p in small.iterdir() if not p.name.endswith(".lock")] == []  # no half-made database


# -- 15. a first reconcile longer than systemd's timeouts --------------------------------------------------------------


@pytest.mark.slow
def test_ready_comes_early_and_the_watchdog_is_fed_during_a_long_reconcile(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(1000):
        (photos / f"img{i:04d}.png").write_bytes(noise_png(1000 + i, 64))
    config = tmp_path / "c.toml"
    config.write_text('model = "tinynet"\nworkers = 1\nbatch_size = 8\n')
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.05)
    db = tmp_path / "d.db"
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "--config", str(config), "watch", str(photos)]
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "500000"}  # WatchdogSec=0.5
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    messages: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(
            m == "STATUS=watching 1 folders, 1000 images" for _, m in messages
        ):
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), sock.recv(4096).decode()))
    finally:
        proc.terminate()
        proc.wait(30)
        sock.close()
    texts = [m for _, m in messages]
    ready = texts.index("READY=1")
    progress = [i for i, m in enumerate(texts) if m.startswith("STATUS=reconciling: ")]
    assert progress and progress[-1] > ready  # ready long before the reconcile finished
    start, end = messages[ready][0], messages[progress[-1]][0]
    assert end - start > 1.5, "the reconcile was too short to show anything"
    pings = [t for t, m in messages if m == "WATCHDOG=1" and start <= t <= end]
    gaps = [b - a for a, b in zip([start, *pings], [*pings, end], strict=True)]
    assert max(gaps) < 0.5, f"a gap of {max(gaps):.2f} s without WATCHDOG=1 (WatchdogSec=0.5)"


# -- 5. nothing inside a quarantine is live ---------------------------------------------------------------------------


def test_a_folder_moved_into_an_in_root_quarantine_leaves_the_library(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dupwatch.daemon.cli import main
    from dupwatch.daemon.service import Service
    from tests.helpers import ServiceThread

    root = tmp_path / "photos"
    for folder, name in (("keep", "a.png"), ("burst", "b.png"), ("trip", "c.png")):
        (root / folder).mkdir(parents=True)
        (root / folder / name).write_bytes(noise_png(9))
    (root / "trip" / "other.png").write_bytes(noise_png(10))
    db = tmp_path / "d.db"
    _scan_with(db, root)
    q = root / "quarantine"
    r = CliRunner().invoke(main, ["--db", str(db), "resolve", "--move-to", str(q), "--yes", "--keep-by", "oldest"])
    assert r.exit_code == 0, r.output  # b.png and c.png go to the quarantine inside the root; a.png stays
    cfg = Config(db=db, workers=0, model="tinynet", settle_seconds=0.2)
    with ServiceThread(Service(cfg, [root], tiny_embedder())):
        (root / "trip" / "other copy.png").write_bytes(noise_png(10))
        os.rename(root / "keep", q / "keep")  # the keeper's folder is moved into the quarantine
        # the library held nothing under the quarantine before the move either: wait for the move to be seen
        assert wait_until(lambda: _live_under(Store(db, readonly=True), root / "keep") == [], 20)
        assert wait_until(lambda: _live_under(Store(db, readonly=True), q) == [] and _state(db) == "watching", 20)
        assert wait_until(lambda: len(Store(db, readonly=True).read.groups()) == 1, 20)
    store = Store(db, readonly=True)
    assert _live_under(store, q) == []
    [(_, members)] = store.read.groups()  # only the new pair in trip/, nothing from the quarantine
    assert sorted(os.path.basename(m.path) for m in members) == ["other copy.png", "other.png"]
    moved = store.files.by_path(str(root / "keep" / "a.png"))
    assert moved is not None and moved.status == FileStatus.DELETED


def _scan_with(db: Path, root: Path) -> None:
    store = Store(db)
    with open_pipeline(Config(db=db, workers=0, model="tinynet"), store, tiny_embedder()) as p:
        p.scan([root])
    store.close()


def _live_under(store: Store, folder: Path) -> list[str]:
    return [p for p, k in store.files.stat_index([str(folder)]).items() if k.status == FileStatus.OK]


def _state(db: Path) -> str | None:
    try:
        return json.loads(db.with_name(db.name + ".status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


# -- scan killed at random instants ------------------------------------------------------------------------------------


def test_kill_9_during_scan_then_a_rescan_gives_the_same_library(tmp_path: Path) -> None:
    import random

    from tests.helpers import tree_digest

    root = tmp_path / "photos"
    for n in range(50):
        for folder in ("a", "b", "c"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{n:02d}.png").write_bytes(noise_png(500 + n, 64))
    digest = tree_digest(root)
    config = tmp_path / "c.toml"
    config.write_text('model = "tinynet"\nworkers = 1\nbatch_size = 8\n')

    def groups(db: Path) -> list[list[str]]:
        out = _cli("--db", db, "report", "--format", "json")
        assert out.returncode == 0, out.stderr
        return sorted(sorted(m["path"] for m in g["members"]) for g in json.loads(out.stdout)["groups"])

    clean = tmp_path / "clean.db"
    t = time.monotonic()
    assert _cli("--db", clean, "--config", config, "-q", "scan", root).returncode == 0
    whole = time.monotonic() - t
    expected = groups(clean)
    assert len(expected) == 50
    rng = random.Random(int(os.environ.get("DUPWATCH_FAULT_SEED", "5")))
    for run in range(int(os.environ.get("DUPWATCH_FAULT_RUNS", "4"))):
        db = tmp_path / f"run{run}.db"
        cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "--config", str(config), "-q", "scan"]
        proc = subprocess.Popen([*cmd, str(root)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, whole))
        proc.kill()
        proc.wait()
        r = _cli("--db", db, "--config", config, "-q", "scan", root)
        assert r.returncode == 0, r.stderr
        assert groups(db) == expected, f"run {run}"
        store = Store(db, readonly=True)
        rows = store.db.execute("SELECT path, count(*) FROM files GROUP BY path HAVING count(*) > 1").fetchall()
        assert rows == [] and store.read.counts()["files"] == 150
        store.close()
    assert tree_digest(root) == digest  # a scan never touches a photo


# -- watch killed at random instants -----------------------------------------------------------------------------------


def test_kill_9_of_watch_at_random_instants_loses_nothing(tmp_path: Path) -> None:
    import random

    from tests.helpers import tree_digest

    photos = tmp_path / "photos"
    photos.mkdir()
    config = tmp_path / "c.toml"
    config.write_text('model = "tinynet"\nworkers = 1\nbatch_size = 8\nsettle_seconds = 0.2\n')
    db = tmp_path / "d.db"
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "--config", str(config), "watch", str(photos)]

    def count() -> int:
        try:
            return Store(db, readonly=True).read.counts()["files"]
        except Exception:
            return -1

    rng = random.Random(int(os.environ.get("DUPWATCH_FAULT_SEED", "3")))
    runs = int(os.environ.get("DUPWATCH_FAULT_RUNS", "4"))
    total = 0
    for run in range(runs):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(30):  # photos keep arriving while it runs; every third has an identical copy
            name = f"r{run}-{i:02d}"
            (photos / f"{name}.png").write_bytes(noise_png(10_000 * run + i, 64))
            total += 1
            if i % 3 == 0:
                (photos / f"{name}-copy.png").write_bytes(noise_png(10_000 * run + i, 64))
                total += 1
        time.sleep(rng.uniform(0.1, 2.0))  # often while the batch is being written
        proc.kill()
        proc.wait()
    digest = tree_digest(photos)
    log = tmp_path / "last.log"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:  # the last start must not give up on what the kills left (it once refused a 0-byte database file)
        wait_until(lambda: count() == total or proc.poll() is not None, 600, every=0.5)
        assert proc.poll() is None, log.read_text()
        assert count() == total, (count(), total)
    finally:
        proc.terminate()
        proc.wait(30)
    store = Store(db, readonly=True)
    rows = store.db.execute("SELECT path, count(*) FROM files GROUP BY path HAVING count(*) > 1").fetchall()
    assert rows == []  # every photo recorded exactly once
    groups = store.read.groups()
    assert len(groups) == 10 * runs and all(len(m) == 2 for _, m in groups)
    assert all(m[0].path.replace("-copy", "") == m[1].path.replace("-copy", "") for _, m in groups)
    assert tree_digest(photos) == digest
