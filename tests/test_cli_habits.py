"""The command line as users type it: global options after the command, a quiet -q, a progress bar that says
what it is doing and keeps log lines apart, a summary that counts the whole command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dupwatch.daemon.cli import main
from tests.helpers import noise_png, run_on_terminal, run_python, screen_lines

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        (root / f"p{i}.png").write_bytes(noise_png(40 + i))
    (root / "p0-copy.png").write_bytes(noise_png(40))
    (root / "broken.png").write_bytes(noise_png(41)[:200])
    (tmp_path / "c.toml").write_text('model = "tinynet"\nworkers = 0\n')
    return root


def test_global_options_are_accepted_after_the_command(folder: Path, tmp_path: Path) -> None:
    db, other, config = tmp_path / "x.db", tmp_path / "other.db", str(tmp_path / "c.toml")
    run = CliRunner().invoke
    r = run(main, ["scan", "--db", str(db), "--config", config, "-q", str(folder)])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""  # -q: no summary, no warning about broken.png (errors only)
    assert db.exists()
    r = run(main, ["--db", str(other), "status", "--db", str(db), "--json"])  # after the command wins
    assert r.exit_code == 0 and f'"database": "{db}"' in r.stdout
    assert not other.exists()
    r = run(main, ["report", "-v", "--db", str(db), "--format", "json"])
    assert r.exit_code == 0 and '"groups"' in r.stdout


def test_the_summary_counts_the_whole_command(folder: Path, tmp_path: Path) -> None:
    t = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "dupwatch.daemon.cli", "scan", "--db", str(tmp_path / "s.db"), str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )  # the real CNN: its loading is part of what the user waits for
    wall = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    said = float(re.search(r"in (\d+\.\d)s", r.stderr).group(1))
    assert wall - 3.0 < said <= wall  # only the interpreter's own start-up is outside the count


def test_on_a_terminal_the_bar_says_what_it_does_and_log_lines_stand_apart(folder: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "scan", "--db", str(tmp_path / "t.db"), str(folder)]
    out = run_on_terminal(cmd, REPO)
    assert "loading the CNN" in out
    lines = screen_lines(out)
    warning = [line for line in lines if "broken.png" in line]
    assert warning, out
    assert not any("fingerprinting" in line or "━" in line for line in warning)  # not glued to the bar
    assert any(line.startswith("scanned 5 files") for line in lines)


@pytest.fixture
def scanned(tmp_path: Path) -> Path:
    """A library with long-ish names, scanned (tinynet)."""
    root = tmp_path / "Pictures"
    for folder in ("DCIM/100APPLE", "WhatsApp/Media/WhatsApp Images"):
        (root / folder).mkdir(parents=True)
    for i in range(3):
        data = noise_png(60 + i, 64)
        (root / "DCIM/100APPLE" / f"IMG_2024061{i}_123456789.png").write_bytes(data)
        (root / "WhatsApp/Media/WhatsApp Images" / f"IMG-2024061{i}-WA00{i}.png").write_bytes(data)
    (tmp_path / "c.toml").write_text('model = "tinynet"\nworkers = 0\n')
    db = tmp_path / "d.db"
    r = CliRunner().invoke(main, ["scan", "--db", str(db), "--config", str(tmp_path / "c.toml"), "-q", str(root)])
    assert r.exit_code == 0, r.output
    return db


def test_the_table_fits_an_80_column_terminal_with_names_whole(scanned: Path) -> None:
    out = run_on_terminal(
        [sys.executable, "-m", "dupwatch.daemon.cli", "report", "--db", str(scanned)], REPO, columns=80
    )
    lines = [line.rstrip() for line in screen_lines(out)]
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "match:" in text and "paths under" in text
    for i in range(3):  # relative paths: short enough that no file name is cut
        assert f"IMG_2024061{i}_123456789.png" in text and f"IMG-2024061{i}-WA00{i}.png" in text
    assert not any("/tmp/" in line for line in lines if "64x64" in line)  # rows show paths below the root


def test_the_demo_uses_its_own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("skimage")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    own = tmp_path / "state" / "dupwatch" / "dupwatch.db"
    r = CliRunner().invoke(main, ["demo", str(tmp_path / "demo"), "-q"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "state" / "dupwatch" / "demo.db").exists() and not own.exists()
    assert "the demo's database is" in r.stderr


def test_roots_lists_the_folders_and_forget_drops_one_that_is_gone(scanned: Path) -> None:
    import shutil

    root = scanned.parent / "Pictures"
    r = CliRunner().invoke(main, ["roots", "--db", str(scanned), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == [{"path": str(root), "files": 6, "exists": True}]
    shutil.rmtree(root / "WhatsApp")
    assert CliRunner().invoke(main, ["forget", "--db", str(scanned), str(root / "WhatsApp")]).exit_code == 0
    status = json.loads(CliRunner().invoke(main, ["status", "--db", str(scanned), "--json"]).stdout)
    assert (status["files"], status["groups"]) == (3, 0)  # its copies left their groups
    shutil.rmtree(root)
    assert CliRunner().invoke(main, ["forget", "--db", str(scanned), str(root)]).exit_code == 0
    assert json.loads(CliRunner().invoke(main, ["roots", "--db", str(scanned), "--json"]).stdout) == []
    again = CliRunner().invoke(main, ["forget", "--db", str(scanned), str(root)])
    assert again.exit_code == 1 and "nothing is recorded" in again.stderr


def _groups_by_id(db: Path) -> dict[int, list[str]]:
    r = CliRunner().invoke(main, ["report", "--db", str(db), "--format", "json"])
    assert r.exit_code == 0, r.output
    return {g["id"]: sorted(m["path"] for m in g["members"]) for g in json.loads(r.stdout)["groups"]}


def test_group_ids_stay_the_same_across_resolve_and_undo(scanned: Path, tmp_path: Path) -> None:
    before = _groups_by_id(scanned)
    assert len(before) == 3
    q = str(tmp_path / "q")
    one = sorted(before)[1]
    for args, left in ((["resolve", str(one)], 2), (["resolve", "--yes"], 0)):  # one group, then all of them
        r = CliRunner().invoke(main, [*args, "--db", str(scanned), "--move-to", q])
        assert r.exit_code == 0, r.output
        assert len(_groups_by_id(scanned)) == left
        assert CliRunner().invoke(main, ["undo", "--db", str(scanned)]).exit_code == 0
        assert _groups_by_id(scanned) == before  # back at once, under the same ids, no rescan needed


def _same_picture(seed: int, copy: int) -> bytes:
    """The same pixels in other bytes (a text chunk differs): a near-duplicate with its own content hash, since
    "not duplicates" decisions are kept by content."""
    import io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("copy", str(copy))
    buf = io.BytesIO()
    Image.open(io.BytesIO(noise_png(seed, 64))).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


@pytest.fixture
def four(tmp_path: Path) -> tuple[Path, list[str]]:
    """A group of four identical photos, scanned."""
    root = tmp_path / "four"
    root.mkdir()
    names = [str(root / f"{c}.png") for c in "wxyz"]
    for n, name in enumerate(names):
        Path(name).write_bytes(_same_picture(77, n))
    (tmp_path / "c.toml").write_text('model = "tinynet"\nworkers = 0\n')
    db = tmp_path / "f.db"
    r = CliRunner().invoke(main, ["scan", "--db", str(db), "--config", str(tmp_path / "c.toml"), "-q", str(root)])
    assert r.exit_code == 0, r.output
    return db, names


def test_ignore_a_pair_a_member_a_group_list_them_and_take_them_back(four: tuple[Path, list[str]]) -> None:
    db, (w, x, y, z) = four
    run = CliRunner().invoke
    r = run(main, ["ignore", "--db", str(db), w, x])
    assert r.exit_code == 0 and "still in group" in r.stderr  # w and x stay connected through y and z
    assert list(_groups_by_id(db).values()) == [sorted([w, x, y, z])]
    r = run(main, ["ignore", "--db", str(db), "--member", w])
    assert r.exit_code == 0, r.output
    assert list(_groups_by_id(db).values()) == [sorted([x, y, z])]  # w left, the others stay together
    listed = json.loads(run(main, ["ignored", "--db", str(db), "--json"]).stdout)
    assert len(listed) == 3  # w-x once, w-y, w-z: never x-y or the like
    assert all(e["paths_a"] and e["paths_b"] for e in listed)
    assert {frozenset((*e["paths_a"], *e["paths_b"])) for e in listed} == {frozenset((w, o)) for o in (x, y, z)}
    r = run(main, ["unignore", "--db", str(db), "--id", str(listed[0]["id"])])
    assert r.exit_code == 0 and len(json.loads(run(main, ["ignored", "--db", str(db), "--json"]).stdout)) == 2


def test_ignoring_several_files_names_the_first_against_each_other(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    a, b, c = (str(root / f"{n}.png") for n in "abc")
    for n, name in enumerate((a, b, c)):
        Path(name).write_bytes(_same_picture(1, n))
    (tmp_path / "c.toml").write_text('model = "tinynet"\nworkers = 0\n')
    db = tmp_path / "d.db"
    CliRunner().invoke(main, ["scan", "--db", str(db), "--config", str(tmp_path / "c.toml"), "-q", str(root)])
    r = CliRunner().invoke(main, ["ignore", "--db", str(db), a, b, c])
    assert r.exit_code == 0
    assert list(_groups_by_id(db).values()) == [sorted([b, c])]  # b and c were not declared apart
    r = CliRunner().invoke(main, ["unignore", "--db", str(db), a, b])
    assert r.exit_code == 0 and list(_groups_by_id(db).values()) == [sorted([a, b, c])]
    group = next(iter(_groups_by_id(db)))
    assert CliRunner().invoke(main, ["ignore", "--db", str(db), "--group", str(group)]).exit_code == 0
    assert _groups_by_id(db) == {}


def test_the_duplicate_hook_runs_through_the_shell_for_new_duplicates_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from dupwatch.daemon.config import Config
    from dupwatch.daemon.service import Service
    from dupwatch.hashing.embedding import tiny_embedder
    from tests.helpers import ServiceThread, wait_until

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "old.png").write_bytes(noise_png(5, 64))
    (photos / "old-copy.png").write_bytes(noise_png(5, 64))  # a duplicate from before the daemon started
    log = tmp_path / "hook.log"
    cfg = Config(
        db=tmp_path / "d.db",
        workers=0,
        model="tinynet",
        settle_seconds=0.2,
        on_duplicate=f"cat >> '{log}'; echo >> '{log}'",
    )
    caplog.set_level(logging.INFO, logger="dupwatch")
    with ServiceThread(Service(cfg, [photos], tiny_embedder())):
        assert wait_until(lambda: _count_files(cfg.db) == 2, 20)
        (photos / "new.png").write_bytes(noise_png(6, 64))
        (photos / "new-copy.png").write_bytes(noise_png(6, 64))
        assert wait_until(lambda: log.exists() and "new" in log.read_text(), 20)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [e["event"] for e in events] == ["duplicate"]  # the old pair was found at start: no hook for it
    assert Path(events[0]["path"]).name.startswith("new")
    found = [r for r in caplog.records if r.getMessage().startswith("duplicate:")]
    assert found and all(r.levelno == logging.INFO for r in found)  # news, not a warning


def _count_files(db: Path) -> int:
    from dupwatch.daemon.store import Store

    try:
        return Store(db, readonly=True).read.counts()["files"]
    except Exception:
        return -1


def test_a_burst_of_duplicates_gives_a_few_hook_runs_and_one_summary() -> None:
    from dupwatch.daemon.service import HookLimiter

    ran: list[dict] = []
    limiter = HookLimiter(burst=5, window=10.0)
    for i in range(300):
        limiter.offer({"event": "duplicate", "path": f"/p/{i}.jpg"}, ran.append, now=100.0 + i * 0.01)
    limiter.flush(ran.append, now=105.0)  # inside the window: still held
    assert len(ran) == 5
    limiter.flush(ran.append, now=115.0)
    assert len(ran) == 6 and ran[-1]["event"] == "duplicates" and ran[-1]["count"] == 295
    limiter.offer({"event": "duplicate", "path": "/p/late.jpg"}, ran.append, now=130.0)
    assert ran[-1]["path"] == "/p/late.jpg"  # the next burst is told again


def test_the_installed_unit_reads_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    photos = tmp_path / "My Photos"
    photos.mkdir()
    r = CliRunner().invoke(main, ["service", "install", "--db", str(tmp_path / "d.db"), str(photos)])
    assert r.exit_code == 0, r.output
    unit = (tmp_path / "cfg" / "systemd" / "user" / "dupwatch.service").read_text()
    comments = [line for line in unit.splitlines() if line.startswith("#")]
    assert comments[0].startswith("# dupwatch, as a systemd user service")
    assert f"# Watches: '{photos}'" in comments and f"# Database: {tmp_path / 'd.db'}" in comments
    assert "@" not in unit.replace("$USER", "") and "replace" not in unit  # no placeholders, no by-hand recipe


def test_service_status_shows_the_unit_and_its_journal(tmp_path: Path) -> None:
    import os
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("systemctl", "dupwatch.service - active (running)"), ("journalctl", "READY, watching 2")):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho '{text}' \"$@\"\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(
        [sys.executable, "-m", "dupwatch.daemon.cli", "service", "status", "--db", str(tmp_path / "d.db")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "active (running) --user status dupwatch" in r.stdout
    assert "READY, watching 2 --user -u dupwatch -n 20" in r.stdout
    assert "daemon: not running" in r.stdout


def test_version_help_topics_and_shell_completion() -> None:
    import os
    from importlib.metadata import version

    run = CliRunner().invoke
    r = run(main, ["--version"])
    assert r.exit_code == 0 and version("dupwatch") in r.stdout
    r = run(main, ["help", "resolve"], prog_name="dupwatch")
    assert r.exit_code == 0 and r.stdout.startswith("Usage: dupwatch resolve") and "--dry-run" in r.stdout
    r = run(main, ["help", "safety"])
    assert r.exit_code == 0 and "Nothing is ever deleted" in r.stdout
    r = run(main, ["help"])
    assert r.exit_code == 0 and "Topics: matching, safety, config, service" in r.stdout
    assert run(main, ["help", "nonsense"]).exit_code == 2
    script = run(main, ["completion", "bash"])
    assert script.exit_code == 0 and "_DUPWATCH_COMPLETE" in script.stdout
    env = {**os.environ, "_DUPWATCH_COMPLETE": "bash_complete", "COMP_WORDS": "dupwatch res", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "dupwatch.daemon.cli"], env=env, capture_output=True, text=True)
    assert "resolve" in done.stdout


def test_every_scan_ends_with_what_it_skipped(tmp_path: Path) -> None:
    root = tmp_path / "camera"
    root.mkdir()
    (root / "a.png").write_bytes(noise_png(1, 64))
    for name in ("clip1.mp4", "clip2.MP4", "clip3.mp4", "notes.txt", "clip.mov", "README"):
        (root / name).write_bytes(b"not read as an image")
    (root / ".hidden.mp4").write_bytes(b"x")  # hidden and temporary files are not counted
    (root / "b.jpg.part").write_bytes(b"x")
    (tmp_path / "c.toml").write_text('model = "tinynet"\nworkers = 0\n')
    r = CliRunner().invoke(
        main, ["scan", "--db", str(tmp_path / "d.db"), "--config", str(tmp_path / "c.toml"), str(root)]
    )
    assert r.exit_code == 0, r.output
    assert "6 files skipped (not images dupwatch reads): .mp4 x3, (no suffix) x1, .mov x1, .txt x1" in r.stderr


def test_camera_raw_is_read_paired_with_its_jpeg_and_kept(tmp_path: Path, embedder) -> None:
    import numpy as np
    from PIL import Image

    from dupwatch.daemon.demo import load_photo
    from tests.helpers import write_dng

    pytest.importorskip("pidng")
    root = tmp_path / "DCIM"
    root.mkdir()
    photo = load_photo("chelsea").resize((900, 600))
    write_dng(np.asarray(photo), root / "IMG_0001")
    photo.save(root / "IMG_0001.JPG", quality=90)  # the camera's JPEG of the same shot
    (root / "IMG_0002.CR2").write_bytes(b"II*\x00 not really a canon raw")
    load_photo("coffee").resize((900, 600)).save(root / "IMG_0003.JPG", quality=90)
    db = tmp_path / "raw.db"
    r = CliRunner().invoke(main, ["scan", "--db", str(db), "--workers", "0", str(root)])
    assert r.exit_code == 0, r.output
    report = json.loads(CliRunner().invoke(main, ["report", "--db", str(db), "--format", "json"]).stdout)
    [group] = report["groups"]
    assert sorted(Path(m["path"]).name for m in group["members"]) == ["IMG_0001.JPG", "IMG_0001.dng"]
    assert Path(group["keeper"]).name == "IMG_0001.dng" and "format" in group["keeper_reason"]
    dng = next(m for m in group["members"] if m["path"].endswith(".dng"))
    assert (dng["width"], dng["height"], dng["format"]) == (900, 600, "RAW")
    [bad] = report["errors"]
    assert bad["path"].endswith("IMG_0002.CR2") and "camera RAW" in bad["error"]
    assert Image.open(root / "IMG_0001.JPG").size == (900, 600)


@pytest.mark.parametrize("command", [["status"], ["report", "--format", "json"], ["actions"], ["roots"]])
def test_read_only_commands_start_without_torch(scanned: Path, command: list[str]) -> None:
    """Read-only commands never load the CNN (importing torch alone costs seconds on a small machine)."""
    probe = (
        "import sys; from dupwatch.daemon.cli import main;"
        f"main({[*command, '--db', str(scanned)]!r}, standalone_mode=False);"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    run_python(probe, cwd=REPO, timeout=60)
