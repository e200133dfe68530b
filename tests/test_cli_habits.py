"""The command line as users type it: global options after the command, a quiet -q, a progress bar that says
what it is doing and keeps log lines apart, a summary that counts the whole command."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dupwatch.daemon.cli import main
from tests.helpers import noise_png, run_on_terminal, screen_lines

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
