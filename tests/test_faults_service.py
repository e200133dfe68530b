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
from tests.helpers import dying_fingerprinter, noise_png, wait_until

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
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
