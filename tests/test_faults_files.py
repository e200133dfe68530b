"""Hostile files: FIFOs, devices and symlinks named like photos, non-UTF-8 names, names that look like markup or
HTML, bad EXIF orientation tags, near-limit images, folders that cannot be listed. Each ends with a clear reason,
and nothing else of the scan is lost."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, TiffImagePlugin

from dupwatch.daemon.cli import main
from dupwatch.daemon.config import Config
from dupwatch.daemon.html import render_html
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.records import FileStatus
from dupwatch.daemon.reports import build_report
from dupwatch.daemon.service import Service
from dupwatch.daemon.store import Store
from dupwatch.hashing.embedding import tiny_embedder
from dupwatch.hashing.fingerprint import fingerprint_file
from tests.helpers import ServiceThread, noise_png, photo_jpeg, run_python, wait_until

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")


def _scan(db: Path, root: Path, **cfg: object) -> Store:
    store = Store(db)
    settings: dict = {"workers": 0, "model": "tinynet", **cfg}
    with open_pipeline(Config(db=db, **settings), store, tiny_embedder()) as p:
        p.scan([root])
    return store


def _errors(store: Store) -> dict[str, str]:
    return {os.path.basename(r.path): r.error or "" for r in store.read.errors()}


# -- 7. FIFOs, devices, symlinks to devices --------------------------------------------------------------------------


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "good.png").write_bytes(noise_png(1))
    (root / "copy.png").write_bytes(noise_png(1))
    os.mkfifo(root / "x.jpg")
    (root / "z.jpg").symlink_to("/dev/zero")
    (root / "outside.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    (tmp_path / "elsewhere.jpg").write_bytes(noise_png(1))  # the same picture as good.png, but outside the root
    with contextlib.suppress(PermissionError):  # a character device with /dev/zero's numbers, where allowed
        os.mknod(root / "dev.jpg", 0o600 | 0o020000, os.makedev(1, 5))
    return root


def test_scan_reads_only_regular_files_and_says_why_not_the_others(hostile: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(tmp_path / "d.db"), "-q", "scan", str(hostile)]
    proc = subprocess.run([*cmd, "--workers", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # it finished: the FIFO did not block it
    store = Store(tmp_path / "d.db", readonly=True)
    errors = _errors(store)
    assert "FIFO" in errors["x.jpg"]
    assert "symbolic link" in errors["z.jpg"] and "symbolic link" in errors["outside.jpg"]
    if (hostile / "dev.jpg").exists():
        assert "character device" in errors["dev.jpg"]
    [(_, members)] = store.read.groups()  # the two real copies, never the symlink to a third
    assert sorted(os.path.basename(m.path) for m in members) == ["copy.png", "good.png"]


def test_watch_records_them_the_same_way_and_still_stops(hostile: Path, tmp_path: Path) -> None:
    cfg = Config(db=tmp_path / "w.db", workers=1, model="tinynet", settle_seconds=0.2)
    service = Service(cfg, [hostile], tiny_embedder())
    with ServiceThread(service):
        os.mkfifo(hostile / "late.jpg")
        (hostile / "late-link.jpg").symlink_to(hostile / "good.png")
        assert wait_until(lambda: {"late.jpg", "late-link.jpg"} <= set(_errors(Store(cfg.db, readonly=True))), 30)
    errors = _errors(Store(cfg.db, readonly=True))  # the ServiceThread stopped within its timeout
    assert "FIFO" in errors["late.jpg"] and "symbolic link" in errors["late-link.jpg"]
    assert "FIFO" in errors["x.jpg"] and "symbolic link" in errors["z.jpg"]


# -- 8. names that are not UTF-8 ------------------------------------------------------------------------------------


def test_non_utf8_names_are_stored_and_reported_losslessly(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    raw = os.fsencode(root) + b"/bad\xff.jpg"
    with open(raw, "wb") as f:
        f.write(photo_jpeg("coffee", 90))
    (root / "good.jpg").write_bytes(photo_jpeg("coffee", 90))
    db = tmp_path / "d.db"
    config = tmp_path / "c.toml"
    config.write_text('model = "tinynet"\nworkers = 0\n')
    # the two files are identical: one is fingerprinted, the other its copy; the second scan finds both unchanged
    for expected in (b"1 fingerprinted, 1 identical copies", b"2 unchanged"):
        r = subprocess.run(
            [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "--config", str(config), "scan", str(root)],
            cwd=REPO,
            capture_output=True,
            timeout=120,
        )
        assert r.returncode == 0 and expected in r.stderr, r.stderr
    store = Store(db, readonly=True)
    [(_, members)] = store.read.groups()
    assert {os.fsencode(m.path) for m in members} == {raw, os.fsencode(root / "good.jpg")}
    out = subprocess.run(
        [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "report", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    paths = {m["path"] for m in json.loads(out.stdout)["groups"][0]["members"]}
    assert raw in {os.fsencode(p) for p in paths}  # JSON escapes the odd byte; it decodes back to the same name
    table = subprocess.run(
        [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(db), "report"], cwd=REPO, capture_output=True
    )
    assert table.returncode == 0 and b"bad\xff.jpg" in table.stdout  # printed as the bytes `ls` shows
    q = tmp_path / "q"
    moved = CliRunner().invoke(main, ["--db", str(db), "resolve", "--move-to", str(q), "--yes", "--keep-by", "size"])
    assert moved.exit_code == 0, moved.output
    assert CliRunner().invoke(main, ["--db", str(db), "undo"]).exit_code == 0
    assert os.path.exists(raw) and (root / "good.jpg").exists()


def test_watch_survives_a_non_utf8_name(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    cfg = Config(db=tmp_path / "w.db", workers=0, model="tinynet", settle_seconds=0.2)
    raw = os.fsencode(root) + b"/caf\xe9.png"
    with ServiceThread(Service(cfg, [root], tiny_embedder())):
        with open(raw, "wb") as f:
            f.write(noise_png(5))
        assert wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["files"] == 1, 20)
    with ServiceThread(Service(cfg, [root], tiny_embedder())):  # and again on a restart
        (root / "other.png").write_bytes(noise_png(6))
        assert wait_until(lambda: Store(cfg.db, readonly=True).read.counts()["files"] == 2, 20)
    rec = Store(cfg.db, readonly=True).files.by_path(os.fsdecode(raw))
    assert rec is not None and rec.status == FileStatus.OK


# -- 9. names that look like markup -----------------------------------------------------------------------------------


@pytest.fixture
def markup_names(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "photos"
    (root / "x[").mkdir(parents=True)
    names = ["x[/]y.jpg", "[bold]x[reverse].jpg", "<!--<script>a.jpg"]
    for n, name in enumerate(names):
        data = photo_jpeg("astronaut", 80 + n)
        (root / name.replace("/", "_")).write_bytes(data)
    (root / "x[" / "]y.jpg").write_bytes(photo_jpeg("astronaut", 70))  # a path containing "[/]"
    db = tmp_path / "d.db"
    _scan(db, root).close()
    return root, db


def test_paths_are_never_read_as_markup(markup_names: tuple[Path, Path]) -> None:
    _, db = markup_names
    r = CliRunner().invoke(main, ["--db", str(db), "report"], terminal_width=300)
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    for name in ("x[/]y.jpg", "[bold]x[reverse].jpg", "<!--<script>a.jpg"):
        assert name.replace("/", "_") in text or name in text


def test_a_name_with_an_html_comment_does_not_blank_the_report(markup_names: tuple[Path, Path], tmp_path: Path) -> None:
    _, db = markup_names
    html = render_html(build_report(Store(db, readonly=True)))
    blob = html[html.index('<script id="data"') :]
    blob = blob[blob.index(">") + 1 : blob.index("</script>")]
    assert "<" not in blob  # nothing in the data block can end the script or open a comment
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    page = tmp_path / "r.html"
    page.write_text(html)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    dom = subprocess.run(
        [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'p'}", "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert int(re.search(r'data-images="(\d+)"', dom).group(1)) == 4  # every file of the group is on the page
    assert "&lt;!--&lt;script&gt;a.jpg" in dom


# -- 10. EXIF orientation that is not a number -------------------------------------------------------------------------


@pytest.mark.parametrize(("orientation", "tiff_type"), [("6", 2), (TiffImagePlugin.IFDRational(6, 1), 5), (99, 3)])
def test_a_bad_orientation_tag_is_ignored_with_a_note(tmp_path: Path, orientation: object, tiff_type: int) -> None:
    head = b"II*\x00\x08\x00\x00\x00"
    ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=head)
    ifd.tagtype[0x0112] = tiff_type  # text (2), a rational (5), or a number out of range (3)
    ifd[0x0112] = orientation
    exif = b"Exif\x00\x00" + head + ifd.tobytes(8)
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo_jpeg("coffee"))).save(buf, "JPEG", exif=exif)
    p = tmp_path / "odd.jpg"
    p.write_bytes(buf.getvalue())
    r = fingerprint_file(p)
    assert r.fingerprint is not None, r.error
    assert r.fingerprint.notes and "orientation" in r.fingerprint.notes[0]
    assert (r.fingerprint.width, r.fingerprint.height) == Image.open(p).size  # the pixels as stored
    store = _scan(tmp_path / "d.db", tmp_path)
    rec = store.files.by_path(str(p))
    assert rec is not None and rec.status == FileStatus.OK and "orientation" in (rec.notes or "")


# -- 11. near-limit images -------------------------------------------------------------------------------------------


def _big_rgba_png(path: Path) -> None:
    """64 megapixels of RGBA that compress to a few hundred KB."""
    im = Image.new("RGBA", (8000, 8000), (255, 255, 255, 255))
    for x in range(0, 8000, 400):
        im.paste((x % 255, 80, 160, 255), (x, 0, x + 40, 8000))
    im.save(path)


def test_a_64_megapixel_png_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """Address space, not RSS (which varies with the machine's state): the decode must fit in 800 MB above what
    the process already maps. The image alone is 256 MB; before it was reduced early, it took 1.25 GB more."""
    big = tmp_path / "big.png"
    _big_rgba_png(big)
    probe = (
        "import sys; from dupwatch.daemon.workers import limit_memory;"
        "from dupwatch.hashing.fingerprint import fingerprint_file;"
        "limit_memory(800 << 20); r = fingerprint_file(sys.argv[1]); print(r.error or 'ok')"
    )
    assert run_python(probe, str(big)).stdout.strip() == "ok"


def test_a_worker_over_its_memory_cap_reports_the_file_and_the_scan_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    _big_rgba_png(root / "huge.png")
    (root / "small.png").write_bytes(noise_png(3))
    store = _scan(tmp_path / "d.db", root, workers=1, worker_memory_mb=200)  # the decoded image alone is 256 MB
    assert "too large to decode in memory" in _errors(store)["huge.png"]
    assert store.read.counts()["files"] == 1  # small.png


# -- 12. a folder that cannot be listed -------------------------------------------------------------------------------


def test_an_unreadable_folder_is_an_error_and_its_files_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    (root / "private").mkdir(parents=True)
    (root / "private" / "a.png").write_bytes(noise_png(7))
    (root / "b.png").write_bytes(noise_png(7))
    db = tmp_path / "d.db"
    _scan(db, root).close()
    real_scandir = os.scandir

    def refusing(path: object = ".") -> object:  # as root, chmod cannot take the right to list away: inject it
        if os.fspath(path) == str(root / "private"):  # type: ignore[call-overload]
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", refusing)
    store = _scan(db, root)
    assert "cannot list this folder" in _errors(store)["private"]
    kept = store.files.by_path(str(root / "private" / "a.png"))
    assert kept is not None and kept.status == FileStatus.OK  # not marked gone
    assert len(store.read.groups()) == 1
    report = CliRunner().invoke(main, ["--db", str(db), "report", "--format", "json"])
    assert any(e["path"] == str(root / "private") for e in json.loads(report.stdout)["errors"])
    monkeypatch.setattr(os, "scandir", real_scandir)
    store = _scan(db, root)
    assert "private" not in _errors(store)  # readable again: the folder's error is gone
