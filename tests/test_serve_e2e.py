"""`dupwatch serve` and `watch --serve` as users start them (real processes, real sockets), and the review page in a
real headless Chromium: resolve a group from the page, see the files move, undo from the page, see them back."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx  # the client Starlette recommends; httpx itself is not a dependency
import numpy as np
import pytest
from PIL import Image

from tests.helpers import tree_digest, wait_until
from tests.serve_helpers import scanned_library
from tests.test_html import CHROMIUM, FLAGS

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running(args: list[str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`dupwatch ARGS` started with --port 0; yields the process and the URL it printed."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dupwatch.daemon.cli", *args, "--port", "0"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        found: list[str] = []

        def printed() -> bool:
            found[:] = re.findall(r"open (http://\S+)", log.read_text())
            return bool(found) or proc.poll() is not None

        assert wait_until(printed, timeout=120), log.read_text()
        assert found, log.read_text()
        yield proc, found[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _csrf(client: httpx.Client, base: str) -> str:
    page = client.get(base + "/review").text
    m = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert m, page
    return m.group(1)


def test_serve_starts_and_stops_cleanly_and_says_why_it_cannot(tmp_path: Path, embedder) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(tmp_path / "none.db"), "serve"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 1 and "no database" in r.stderr and "Traceback" not in r.stderr
    cfg, _ = scanned_library(tmp_path, embedder)
    with running(["--db", str(cfg.db), "serve"], tmp_path / "a.log") as (proc, url):
        port = int(url.split(":")[2].split("/")[0])
        r = subprocess.run(
            [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(cfg.db), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
        assert httpx.get(url).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    with running(["--db", str(cfg.db), "serve", "--host", "0.0.0.0"], tmp_path / "b.log") as (proc, url):
        token = re.search(r"token=(\S+)", url)
        assert token, url
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(local.split("?")[0]).status_code == 401
        assert httpx.get(local).status_code == 200


def test_watch_serve_reviews_and_resolves_beside_the_running_daemon(tmp_path: Path, embedder) -> None:
    cfg, files = scanned_library(tmp_path, embedder)
    root = files["chelsea"][0].parents[1]
    before = tree_digest(root)
    args = ["--db", str(cfg.db), "watch", "--serve", str(root)]
    with running(args, tmp_path / "w.log") as (proc, url), httpx.Client() as client:
        base = url.rsplit("/", 1)[0]
        assert wait_until(lambda: (client.get(base + "/api/status").json()["daemon"] or {}).get("state") == "watching")
        headers = {"X-CSRF-Token": _csrf(client, base)}
        group = next(
            g for g in client.get(base + "/api/groups").json()["groups"] if len(g["members"]) == 3
        )  # chelsea's
        r = client.post(f"{base}/api/groups/{group['id']}/resolve", json={"mode": "move"}, headers=headers)
        assert r.status_code == 200, r.text  # no "another dupwatch is writing": the daemon is this process
        action = r.json()["action"]
        assert r.json()["moved"] == 2
        # a new copy lands: the daemon groups it with the keeper, and never with the files just moved away
        new = root / "later" / "chelsea_again.png"
        new.parent.mkdir()
        Image.open(group["keeper"]).save(new)

        def grouped() -> bool:
            groups = client.get(base + "/api/groups").json()["groups"]
            return any(str(new) in {m["path"] for m in g["members"]} for g in groups)

        assert wait_until(grouped, timeout=60), (tmp_path / "w.log").read_text()
        g = next(g for g in client.get(base + "/api/groups").json()["groups"] if str(new) in str(g))
        assert {m["path"] for m in g["members"]} == {group["keeper"], str(new)}
        new.unlink()
        r = client.post(f"{base}/api/actions/{action}/undo", headers=headers)
        assert r.status_code == 200 and r.json()["undone"], r.text
        assert wait_until(lambda: tree_digest(root) == before)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def _colourful(png: bytes, box: tuple[int, int, int, int]) -> float:
    """Share of distinct colours in a region: photos have thousands, the page's chrome a handful."""
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").crop(box)).astype(np.int64) // 8
    flat = im.reshape(-1, 3)
    return len(np.unique(flat[:, 0] * 1024 + flat[:, 1] * 32 + flat[:, 2])) / 32768


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_review_in_a_real_browser_resolve_and_undo_from_the_page(tmp_path: Path, embedder) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    cfg, files = scanned_library(tmp_path, embedder)
    root = files["chelsea"][0].parents[1]
    before = tree_digest(root)
    args = ["--db", str(cfg.db), "serve", "--move-to", str(tmp_path / "quarantine")]
    with running(args, tmp_path / "s.log") as (_, url), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS
        )  # --headless too: playwright's own flag, given twice
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector(".group")
        first = page.locator(".group").first
        paths = first.locator(".member").evaluate_all("els => els.map(e => e.dataset.path)")
        assert len(paths) >= 2  # the group with the most space to reclaim
        loaded = "() => Array.from(document.querySelectorAll('.group:first-child img'))"
        page.wait_for_function(loaded + ".every(i => i.complete && i.naturalWidth > 0)")
        shot = page.screenshot(path=str(tmp_path / "review.png"))
        box = first.locator("img").first.bounding_box()
        assert box is not None
        assert _colourful(shot, (int(box["x"]), int(box["y"]), int(box["x"] + 200), int(box["y"] + 130))) > 0.02
        assert _colourful(shot, (0, 0, 400, 40)) < 0.01  # the header bar: flat
        # keyboard: the digit N keeps the group's N-th member (here one the keeper rules did not choose)
        proposed = first.locator(".member.keeper").get_attribute("data-path")
        n = next(i for i, p in enumerate(paths) if p != proposed)
        page.keyboard.press(str(n + 1))
        keeper = paths[n]
        page.wait_for_function(f"() => document.querySelector('.group .member.keeper').dataset.path === {keeper!r}")
        page.locator(".group").first.locator("button.resolve").click()
        page.wait_for_selector("#toast:has-text('files moved')")
        assert Path(keeper).exists()
        assert not any(Path(p).exists() for p in paths if p != keeper)
        assert all((tmp_path / "quarantine" / p.lstrip("/")).exists() for p in paths if p != keeper)
        page.locator("#log .entry.action button.undo").first.click()
        page.wait_for_selector("#toast:has-text('undone')")
        assert tree_digest(root) == before
        page.wait_for_function("() => document.querySelectorAll('.group').length === 2")
        # live: a duplicate scanned in by another process appears without a reload
        later = tmp_path / "later"
        later.mkdir()
        Image.open(files["astronaut"][0]).save(later / "astronaut.png")
        scan = subprocess.run(
            [sys.executable, "-m", "dupwatch.daemon.cli", "--db", str(cfg.db), "scan", "-q", str(later)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert scan.returncode == 0, scan.stderr
        page.wait_for_function("() => document.querySelectorAll('.group').length === 3", timeout=30_000)
        assert "new duplicate group" in page.locator("#toast").inner_text()
        assert not errors, errors
        browser.close()
    if os.environ.get("DUPWATCH_KEEP_SCREENSHOT"):  # for the README
        shutil.copy(tmp_path / "review.png", os.environ["DUPWATCH_KEEP_SCREENSHOT"])
