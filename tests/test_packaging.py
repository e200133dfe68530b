"""What `pip install .` puts into site-packages: one `dupwatch` namespace, nothing generic, no bench/ or tests/;
and python-daemon (whose import name is `daemon`) installs beside it without either overwriting the other."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no package index for setuptools?): {r.stderr[-500:]}")
    [whl] = out.glob("dupwatch-*.whl")
    return whl


def test_the_wheel_holds_only_the_dupwatch_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"dupwatch", next(t for t in tops if t.endswith(".dist-info"))}
    assert any(n == "dupwatch/daemon/cli.py" for n in names)
    assert any(n == "dupwatch/daemon/templates/report.html.j2" for n in names)
    assert any(n == "dupwatch/hashing/decode.py" for n in names)
    # the subpackages and the web app's assets too (a wheel without them imports, then fails at the first query)
    assert "dupwatch/daemon/store/database.py" in names
    assert "dupwatch/daemon/web/app.py" in names
    assert "dupwatch/daemon/web/static/app.js" in names
    assert not any(n.startswith(("dupwatch/bench", "dupwatch/tests", "bench/", "tests/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dupwatch = dupwatch.daemon.program:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_python_daemon_installs_beside_it(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    py = venv / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    r = _run(py, "-m", "pip", "install", "-q", "python-daemon")
    if r.returncode != 0:
        pytest.skip(f"python-daemon could not be installed here (no package index?): {r.stderr[-500:]}")
    before = {p.name for p in site.iterdir()}
    r = _run(py, "-m", "pip", "install", "-q", "--no-deps", wheel)
    assert r.returncode == 0, r.stderr
    added = {p.name for p in site.iterdir()} - before
    assert {a for a in added if not a.endswith(".dist-info")} == {"dupwatch"}
    assert (venv / "bin" / "dupwatch").exists()
    # both import, each from its own files (dupwatch's modules named here need nothing beyond the stdlib)
    probe = (
        "import daemon, dupwatch.daemon.files as f, dupwatch.hashing.errors as e;"
        "assert hasattr(daemon, 'DaemonContext'), daemon.__file__;"
        "print(daemon.__file__); print(f.__file__); print(e.__file__)"
    )
    r = _run(py, "-c", probe, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    theirs, ours, hashing = r.stdout.split()
    assert theirs == str(site / "daemon" / "__init__.py")
    assert ours == str(site / "dupwatch" / "daemon" / "files.py")
    assert hashing == str(site / "dupwatch" / "hashing" / "errors.py")
    assert (site / "dupwatch" / "daemon" / "store" / "database.py").exists()
    assert (site / "dupwatch" / "daemon" / "web" / "static" / "app.js").exists()
