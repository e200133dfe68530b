"""The HTML report: self-contained, and in a real headless browser every thumbnail loads and shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupwatch.daemon.config import Config
from dupwatch.daemon.demo import load_photo
from dupwatch.daemon.html import render_html
from dupwatch.daemon.pipeline import open_pipeline
from dupwatch.daemon.reports import build_report
from dupwatch.daemon.store import Store
from dupwatch.daemon.thumbnails import ThumbnailCache

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report_file(photo_set, embedder, tmp_path_factory) -> tuple[Path, object]:
    root, _ = photo_set
    tmp = tmp_path_factory.mktemp("html")
    store = Store(tmp / "h.db")
    with open_pipeline(Config(db=tmp / "h.db", workers=0), store, embedder) as p:
        p.scan([root])
    rep = build_report(store)
    out = tmp / "report.html"
    out.write_text(render_html(rep))
    return out, rep


def test_report_is_self_contained_and_complete(report_file) -> None:
    out, rep = report_file
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert html.count("data:image/jpeg;base64,") == sum(len(g.members) for g in rep.groups)
    assert f"<b>{rep.reclaimable:,}</b> bytes reclaimable" in html
    assert [g.reclaimable for g in rep.groups] == sorted((g.reclaimable for g in rep.groups), reverse=True)


def _chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_headless_browser_shows_every_thumbnail(report_file, tmp_path: Path) -> None:
    out, rep = report_file
    url = out.as_uri()
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", url, f"--user-data-dir={tmp_path / 'p1'}").stdout
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-loaded="(\d+)"', dom).group(1))
    assert images == sum(len(g.members) for g in rep.groups[:50]) and loaded == images
    shot = tmp_path / "shot.png"
    _chromium(
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'p2'}",
        url,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # photo thumbnails are colourful and textured; the page chrome is flat white/grey/green
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 40).mean() > 0.05, "no photographs visible in the screenshot"
    keeper_green = (pixels[..., 1] > 140) & (pixels[..., 0] < 80) & (pixels[..., 2] < 90)
    assert keeper_green.sum() > 200, "the keeper is not highlighted"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
@pytest.mark.slow
def test_thousands_of_groups_are_paged(report_file, tmp_path: Path) -> None:
    from dataclasses import replace

    _, rep = report_file
    many = replace(rep, groups=[replace(g, id=n) for n in range(1, 121) for g in rep.groups][:120])
    out = tmp_path / "many.html"
    out.write_text(render_html(many))
    dom = _chromium(
        "--virtual-time-budget=5000", "--dump-dom", out.as_uri(), f"--user-data-dir={tmp_path / 'p'}"
    ).stdout
    assert "page 1 of 3" in dom
    assert dom.count('class="group"') == 50
    assert int(re.search(r'data-images="(\d+)"', dom).group(1)) == sum(len(g.members) for g in many.groups[:50])


def test_a_thumbnail_that_cannot_be_kept_is_still_shown_and_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    """The thumbnail cache on a full disk: the thumbnail is made and returned, the cache folder keeps no partial
    file (each request would otherwise leave one more)."""
    photo = tmp_path / "cat.jpg"
    load_photo("chelsea").save(photo, "JPEG")
    real_replace = os.replace

    def full_disk(src, dst):  # type: ignore[no-untyped-def]
        if str(src).endswith(".part"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    cache = ThumbnailCache(tmp_path / "thumbs")
    data = cache.get(str(photo), "abcdef0123")
    assert data is not None and data[:2] == b"\xff\xd8"
    assert [p for p in (tmp_path / "thumbs").rglob("*") if p.is_file()] == []
