"""The daemon as the service manager sees it: a subprocess that survives kill -9, stops cleanly on SIGTERM,
speaks the notify protocol on a real socket, refuses a second instance, and ships unit files that verify."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dupwatch.daemon.store import Store
from tests.helpers import noise_png, wait_until

pytestmark = pytest.mark.slow  # subprocesses and benchmark runners

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path) -> dict:
    photos = tmp_path / "photos"
    photos.mkdir()
    cfg = tmp_path / "dupwatch.toml"
    # the tiny network keeps start-up and throughput fast; the real CNN is covered elsewhere
    cfg.write_text('model = "tinynet"\nsettle_seconds = 0.3\nworkers = 1\nbatch_size = 8\n')
    return {"photos": photos, "db": tmp_path / "d.db", "config": cfg, "tmp": tmp_path}


def _start(env: dict, extra_env: dict | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "dupwatch.daemon.cli",
        "--db",
        str(env["db"]),
        "--config",
        str(env["config"]),
        "-v",
        "watch",
        str(env["photos"]),
    ]
    # its output goes to a file, never to a pipe nobody reads: with -v a busy daemon would fill the pipe and block
    log = env["tmp"] / f"daemon-{len(list(env['tmp'].glob('daemon-*.log')))}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for the daemon to end and return what it printed."""
    proc.wait(timeout)
    return proc.log_path.read_text()  # type: ignore[attr-defined]


def _state(env: dict) -> str | None:
    try:
        return json.loads(env["db"].with_name("d.db.status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


def _count(env: dict) -> int:
    try:
        return Store(env["db"], readonly=True).read.counts()["files"]
    except Exception:
        return -1


def test_kill_9_mid_batch_then_restart_loses_nothing(env: dict) -> None:
    n = 300
    proc = _start(env)
    assert wait_until(lambda: _state(env) == "watching", 60)
    for i in range(n):
        (env["photos"] / f"p{i:04d}.png").write_bytes(noise_png(i))
        if i % 3 == 0:  # every third photo also has an identical copy: those pairs must end up grouped
            (env["photos"] / f"p{i:04d}-copy.png").write_bytes(noise_png(i))
    total = n + (n + 2) // 3
    assert wait_until(lambda: _count(env) > 0, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert _count(env) < total, "the daemon finished before it could be killed mid-batch"
    proc = _start(env)
    try:
        assert wait_until(lambda: _count(env) == total, 120, every=0.5), _count(env)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    store = Store(env["db"], readonly=True)
    rows = store.db.execute("SELECT path, count(*) FROM files GROUP BY path HAVING count(*) > 1").fetchall()
    assert rows == []  # every file recorded exactly once
    groups = store.read.groups()
    assert len(groups) == (n + 2) // 3 and all(len(m) == 2 for _, m in groups)
    assert all(m[0].path.replace("-copy", "") == m[1].path.replace("-copy", "") for _, m in groups)


def test_watch_runs_at_low_cpu_and_disk_priority(env: dict) -> None:
    proc = _start(env)
    try:
        assert wait_until(lambda: _state(env) == "watching", 60)
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[16]) == 10  # field 19: nice
        if shutil.which("ionice"):
            out = subprocess.run(["ionice", "-p", str(proc.pid)], capture_output=True, text=True).stdout
            assert out.strip() == "idle", out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_sigterm_exits_cleanly_and_saves_the_index(env: dict) -> None:
    for i in range(5):
        (env["photos"] / f"s{i}.png").write_bytes(noise_png(100 + i))
    proc = _start(env)
    assert wait_until(lambda: _state(env) == "watching", 60)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - t < 5
    assert env["db"].with_name("d.db.hnsw.meta.npz").exists()
    assert _state(env) == "stopped"


def test_notify_protocol_on_a_real_socket(env: dict) -> None:
    path = env["tmp"] / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    proc = _start(env, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    messages: list[str] = []

    def got(prefix: str) -> bool:
        with contextlib.suppress(TimeoutError):
            messages.append(sock.recv(4096).decode())
        return any(m.startswith(prefix) for m in messages)

    try:
        assert wait_until(lambda: got("READY=1"), 60, every=0)
        assert wait_until(lambda: got("WATCHDOG=1"), 5, every=0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert wait_until(lambda: got("STOPPING=1"), 5, every=0)
    assert any(m.startswith("STATUS=") for m in messages)
    assert messages.index("READY=1") > min(i for i, m in enumerate(messages) if m.startswith("STATUS="))
    sock.close()


def test_a_second_daemon_on_the_same_database_is_refused(env: dict) -> None:
    first = _start(env)
    try:
        assert wait_until(lambda: _state(env) == "watching", 60)
        second = _start(env)
        err = _output(second, 60)
        assert second.returncode == 1 and "already writing" in err
        status = subprocess.run(
            [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(env["db"]), "status"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "watching" in status.stdout and "queue" in status.stdout
        assert "cosine_threshold 0.8" in status.stdout
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)


def _settings(env: dict) -> dict:
    try:
        return json.loads(env["db"].with_name("d.db.status.json").read_text())["settings"]
    except (OSError, ValueError, KeyError):
        return {}


def test_sighup_reloads_the_config(env: dict) -> None:
    proc = _start(env)
    try:
        assert wait_until(lambda: _state(env) == "watching", 60)
        assert _settings(env)["cosine_threshold"] == 0.8 and _settings(env)["settle_seconds"] == 0.3
        new = env["config"].read_text().replace("settle_seconds = 0.3", "settle_seconds = 0.7")
        env["config"].write_text(new + "cosine_threshold = 0.9\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: _settings(env).get("cosine_threshold") == 0.9, 10), _settings(env)
        assert _settings(env)["settle_seconds"] == 0.7
        env["config"].write_text("this is not toml = = =\n")  # a broken file is refused, the service goes on
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: _settings(env).get("cosine_threshold") == 0.9, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = _output(proc, 15)
    assert proc.returncode == 0 and "config reloaded" in err and "config not reloaded" in err


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_files_verify(tmp_path: Path) -> None:
    from dupwatch.daemon.cli import render_unit

    exe = shutil.which("dupwatch") or sys.executable
    user = tmp_path / "dupwatch.service"
    user.write_text(render_unit(exe, tmp_path / "d.db", [tmp_path], None))
    system = tmp_path / "dupwatch-system.service"
    text = (REPO / "systemd" / "dupwatch-system.service").read_text()
    system.write_text(text.replace("/opt/dupwatch/.venv/bin/dupwatch", exe))
    for unit in (user, system):
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        problems = [line for line in r.stderr.splitlines() if unit.name in line]
        assert r.returncode == 0 and not problems, r.stderr


def test_service_install_writes_the_user_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from dupwatch.daemon.cli import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    photos = tmp_path / "My Photos"
    photos.mkdir()
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "d.db"), "service", "install", str(photos)])
    assert r.exit_code == 0, r.output
    unit = (tmp_path / "cfg" / "systemd" / "user" / "dupwatch.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f"'{photos}'" in exec_line and f"--db {tmp_path / 'd.db'}" in exec_line  # quoted: spaces survive
    assert "systemctl --user enable --now dupwatch" in r.stderr


def test_a_process_counts_as_running_whoever_owns_it(tmp_path: Path) -> None:
    """`dupwatch status` asks whether the daemon that wrote the status file still runs. A daemon of the system
    service runs as another user, whom a user may not signal: that process exists all the same (it was reported
    as not running), and a status file naming pid 0 named no daemon (kill(2) took it for the process group). Where
    the tests run unprivileged, pid 1 is such a process."""
    from dupwatch.daemon.config import Config
    from dupwatch.daemon.service import read_status
    from dupwatch.hashing.processes import process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    assert process_alive(os.getpid()) and process_alive(1)
    assert not process_alive(child.pid) and not process_alive(0) and not process_alive(-5)
    cfg = Config(db=tmp_path / "d.db")
    for pid, running in ((1, True), (child.pid, False), (0, False)):
        cfg.status_path.write_text(json.dumps({"state": "running", "pid": pid}))
        assert (read_status(cfg) is not None) is running, pid
