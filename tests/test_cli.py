"""The command line as a user and a script see it: output shapes, stdout/stderr, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from dupwatch.daemon.cli import main
from dupwatch.daemon.lock import WriterLock
from tests.helpers import run_python


def torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def scanned_db(photo_set, tmp_path_factory) -> tuple[Path, Path]:
    root, _ = photo_set
    db = tmp_path_factory.mktemp("cli") / "d.db"
    r = CliRunner().invoke(main, ["--db", str(db), "-q", "scan", str(root), "--workers", "0"])
    assert r.exit_code == 0, r.output
    return db, root


def test_report_json_has_the_documented_shape(scanned_db) -> None:
    db, root = scanned_db
    r = CliRunner().invoke(main, ["--db", str(db), "report", "--format", "json"])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert set(data) >= {"groups", "errors"}
    g = data["groups"][0]
    assert isinstance(g["id"], int)
    assert set(g["members"][0]) >= {"path", "size", "width", "height"}
    assert Path(g["members"][0]["path"]).is_absolute()
    assert set(g["pairs"][0]) >= {"a", "b", "kind", "hamming", "cosine"}
    assert g["pairs"][0]["kind"] in ("exact", "near")
    assert data["tier"] == "copy" and g["tier"] == "copy" and g["label"] == "copies"
    assert all(p["tier"] in ("exact", "copy") for p in g["pairs"])
    assert {"path", "error"} <= set(data["errors"][0])
    assert all(Path(e["path"]).is_relative_to(root / "bad") for e in data["errors"])


def test_report_csv_and_table(scanned_db) -> None:
    db, _ = scanned_db
    r = CliRunner().invoke(main, ["--db", str(db), "report", "--format", "csv"])
    assert r.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert rows and {"group", "path", "size", "width", "height", "error"} <= set(rows[0])
    assert any(row["error"] for row in rows) and any(row["group"] for row in rows)
    table = CliRunner().invoke(main, ["--db", str(db), "report"])  # not a terminal: the plain table
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    header = next(line for line in lines if not line.startswith("#"))
    assert header.split("\t") == ["group", "role", "bytes", "pixels", "match", "path", "note"]
    rows = [line.split("\t") for line in lines[lines.index(header) + 1 :]]
    assert all(len(r) == 7 for r in rows) and any(r[1] == "keep" for r in rows) and any(r[1] == "error" for r in rows)
    assert not any(c in table.stdout for c in "│┃━─") and not any(line.endswith(" ") for line in lines)
    assert all(not Path(r[5]).is_absolute() for r in rows)  # relative to the root named in a '# root:' line


def test_status_counts(scanned_db, photo_set) -> None:
    db, _ = scanned_db
    _, truth = photo_set
    r = CliRunner().invoke(main, ["--db", str(db), "status", "--json"])
    assert r.exit_code == 0
    counts = json.loads(r.stdout)
    assert counts["errors"] == len(truth["bad"])
    assert counts["groups"] == len(truth["groups"])
    assert counts["daemon"] is None and counts["database"] == str(db)


def test_query_finds_a_rotated_copy_of_an_unindexed_image(scanned_db, tmp_path: Path) -> None:
    from PIL import Image

    db, root = scanned_db
    probe = tmp_path / "probe.jpg"
    Image.open(root / "coffee" / "original.jpg").rotate(90, expand=True).save(probe, quality=70)
    r = CliRunner().invoke(main, ["--db", str(db), "query", str(probe), "-k", "5", "--format", "json"])
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)["results"]
    assert results[0]["path"].startswith(str(root / "coffee")) or "copies/coffee" in results[0]["path"]
    assert results[0]["duplicate"] and results[0]["cosine"] > 0.9


def test_exit_codes(scanned_db, tmp_path: Path) -> None:
    db, _ = scanned_db
    runner = CliRunner()
    assert runner.invoke(main, ["--db", str(db), "report", "--format", "xml"]).exit_code == 2
    assert runner.invoke(main, ["--db", str(db), "scan"]).exit_code == 2
    missing = runner.invoke(main, ["--db", str(tmp_path / "none.db"), "status"])
    assert missing.exit_code == 1 and "no database" in missing.stderr
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    q = runner.invoke(main, ["--db", str(db), "query", str(bad)])
    assert q.exit_code == 1 and "not an image" in q.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("no_such_key = 1\n")
    assert runner.invoke(main, ["--config", str(cfg), "status"]).exit_code == 2


def test_one_writer_at_a_time(scanned_db) -> None:
    db, root = scanned_db
    with WriterLock(db.with_name(db.name + ".lock")):
        r = CliRunner().invoke(main, ["--db", str(db), "scan", str(root)])
    assert r.exit_code == 1 and "already writing" in r.stderr


def test_config_file_sets_thresholds_and_flags_override_it(tmp_path: Path) -> None:
    from dupwatch.daemon.config import load_config

    p = tmp_path / "c.toml"
    p.write_text("[matching]\ncosine_threshold = 0.7\nverify_inliers = 25\n[paths]\ndb = '~/x.db'\n")
    cfg = load_config(p)
    assert cfg.cosine_threshold == 0.7 and cfg.verify_inliers == 25 and cfg.db == Path("~/x.db").expanduser()
    assert cfg.with_overrides(cosine_threshold=0.9, workers=None).cosine_threshold == 0.9


def test_a_locked_database_is_a_clear_error_not_a_traceback(scanned_db, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    import dupwatch.daemon.store.database as store_mod

    db, root = scanned_db
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    blocker = sqlite3.connect(db)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        r = CliRunner().invoke(main, ["--db", str(db), "scan", str(root)])
    finally:
        blocker.rollback()
        blocker.close()
    assert r.exit_code == 1 and "locked" in r.stderr and "Traceback" not in r.output


def test_commands_that_embed_nothing_never_load_torch(scanned_db) -> None:
    """The CNN loads when the first image needs it: a rescan that finds nothing new, `status` and `report` start
    without importing torch (a rescan of 10 unchanged camera files: 1.9 s before, 0.4 s now)."""
    db, root = scanned_db
    code = (
        "import sys; from dupwatch.daemon.cli import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n    print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)"
    )
    for args in (["scan", "-q", str(root)], ["status"], ["report", "--format", "json"]):
        r = run_python(code, "--db", str(db), *args, timeout=300)
        assert "torch loaded: False" in r.stderr, (args, r.stderr[-500:])


def test_a_quiet_scan_imports_no_terminal_ui_and_asks_no_helper_program(scanned_db) -> None:
    """`scan -q` (scripts, cron, the benchmarks) shows nothing, so rich is never imported (~25 ms of the start, when
    nothing else can run yet), and every dupwatch process, each decoding worker included, finds its C library
    among what it has loaded instead of importing ctypes.util, which runs ldconfig (~13 ms each)."""
    db, root = scanned_db
    code = (
        "import sys; from dupwatch.daemon.cli import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n    print('loaded:', [m for m in ('rich', 'ctypes.util') if m in sys.modules], file=sys.stderr)"
    )
    r = run_python(code, "--db", str(db), "scan", "-q", str(root), timeout=300)
    assert "loaded: []" in r.stderr, r.stderr[-500:]
    alone = (
        "from dupwatch.daemon.allocator import keep_freed_memory; import sys; keep_freed_memory(); print(sys.modules)"
    )
    r = run_python(alone, timeout=60)
    assert "'ctypes.util'" not in r.stdout, r.stderr


def test_the_command_is_found_after_the_global_options_that_take_a_value() -> None:
    """daemon.program reads the command before click does (to start a decoding command's fork server first): the
    first word that is neither an option nor an option's value, whichever global options come before it."""
    from dupwatch.daemon.program import command_of

    assert command_of(["scan", "photos"]) == "scan"
    assert command_of(["--db", "x.db", "-q", "scan", "photos"]) == "scan"
    assert command_of(["--db", "scan", "report"]) == "report"  # a database file named `scan`
    assert command_of(["--config=c.toml", "-vv", "watch", "/p"]) == "watch"
    assert command_of(["--config", "c.toml", "--", "demo"]) == "demo"
    assert command_of(["report", "--db", "scan"]) == "report"
    assert command_of(["--db", "x.db"]) is None
    assert command_of([]) is None


def test_the_programs_list_of_options_with_a_value_is_the_command_lines() -> None:
    """A global option that takes a value and that daemon.program did not know would make it read that value as
    the command."""
    import click

    from dupwatch.daemon.program import VALUE_OPTIONS

    valued = {
        name
        for p in main.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for name in p.opts + p.secondary_opts
    }
    assert valued == set(VALUE_OPTIONS)


def test_a_decoding_command_starts_its_fork_server_before_it_imports_the_command_line(tmp_path: Path) -> None:
    """`dupwatch scan` (watch, demo) starts its decoding workers' fork server before anything heavy is imported, so
    that the server's imports (numpy, Pillow, OpenCV) run on the other core while this process imports its own;
    `report` (no decoding) starts none."""
    code = (
        "import os, sys\n"
        "def servers():\n"
        "    found = []\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            stat = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
        "            cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if int(stat[1]) == os.getpid() and b'forkserver' in cmd:\n"
        "            found.append(pid)\n"
        "    return found\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dupwatch.daemon.cli':\n"
        "            print('server', bool(servers()), 'numpy', 'numpy' in sys.modules, flush=True)\n"
        "sys.meta_path.insert(0, Watch())\n"
        "sys.argv = ['dupwatch', *sys.argv[1:]]\n"
        "from dupwatch.daemon.program import main\n"
        "main()\n"
    )
    db = str(tmp_path / "x.db")
    for args, expected in (
        (["--db", db, "scan", "--help"], "server True numpy False"),
        (["--db", db, "report", "--help"], "server False numpy False"),
    ):
        r = run_python(code, *args)
        assert r.stdout.splitlines()[0] == expected, r.stdout


@pytest.mark.skipif(torch_sees_cuda(), reason="this machine has a CUDA device: --device cuda is no error here")
def test_a_device_this_machine_lacks_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`--device cuda` where torch sees no GPU ended in torch's AssertionError and a traceback."""
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (64, 48), "red").save(photos / "a.jpg")
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "x.db"), "scan", "--device", "cuda", str(photos)])
    assert r.exit_code == 1, r.output
    assert "no CUDA device" in r.stderr and "--device cpu" in r.stderr
    assert isinstance(r.exception, SystemExit), r.exception  # the CLI's own exit, not torch's error


def test_the_program_leaves_without_the_interpreters_teardown_and_loses_no_output(scanned_db, tmp_path: Path) -> None:
    """`dupwatch` ends with os._exit once a command has returned: unloading every module took 0.1-0.3 s after torch
    was imported. Its piped output (block-buffered) is complete, its exit codes are the command's, and what runs
    only at the interpreter's teardown (an atexit hook here) does not run."""
    import subprocess
    import sys

    db, _ = scanned_db
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('teardown ran', file=sys.stderr))\n"
        "sys.argv = ['dupwatch', *sys.argv[1:]]\n"
        "from dupwatch.daemon.program import main\n"
        "main()\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)

    r = run("--db", str(db), "report", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups"]  # every byte of a block-buffered pipe written before leaving
    assert "teardown ran" not in r.stderr
    missing = run("--db", str(tmp_path / "none.db"), "status")
    assert missing.returncode == 1 and "no database" in missing.stderr
    assert run("--db", str(db), "report", "--format", "xml").returncode == 2
