"""`dupwatch serve` through the framework's test client: every endpoint, on a real library scanned with the real
CNN into a real SQLite file, and every refusal (traversal, symlinks, oversized and non-image uploads, CSRF, token,
Host, a busy writer)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from dupwatch.daemon.config import Config
from dupwatch.daemon.keeper import KeeperPolicy
from dupwatch.daemon.reports import build_report
from dupwatch.daemon.store import Store
from dupwatch.daemon.thumbnails import ThumbnailCache
from dupwatch.daemon.web.app import Writer, create_app
from dupwatch.daemon.web.guard import Access
from dupwatch.daemon.web.search import Searcher
from tests.helpers import photo_jpeg, scan_folder, tree_digest
from tests.serve_helpers import scanned_library

BASE = "http://127.0.0.1:8765"


class App:
    """A client over a fresh scanned library, with the page's CSRF token."""

    def __init__(self, cfg: Config, files: dict[str, list[Path]], embedder, access: Access | None = None) -> None:
        self.cfg, self.files = cfg, files
        self.access = access or Access()
        self.searcher = Searcher(cfg, lambda: embedder)
        self.client = TestClient(create_app(cfg, self.searcher, Writer(cfg), self.access), base_url=BASE)

    def post(self, url: str, body: dict | None = None, **kw):
        headers = {"X-CSRF-Token": self.access.csrf, **kw.pop("headers", {})}
        return self.client.post(url, json=body or {}, headers=headers, **kw)

    def groups(self, tier: str = "copy", **params) -> dict:
        r = self.client.get("/api/groups", params={"tier": tier, **params})
        assert r.status_code == 200, r.text
        return r.json()

    def group_of(self, path: Path) -> dict:
        return next(g for g in self.groups()["groups"] if str(path) in {m["path"] for m in g["members"]})

    def close(self) -> None:
        self.client.close()
        self.searcher.close()


@pytest.fixture(scope="module")
def library(tmp_path_factory, embedder):
    """Read-only tests share one scanned library."""
    cfg, files = scanned_library(tmp_path_factory.mktemp("serve"), embedder)
    app = App(cfg, files, embedder)
    yield app
    app.close()


@pytest.fixture
def fresh(tmp_path, embedder):
    """Tests that change things get their own library."""
    cfg, files = scanned_library(tmp_path, embedder)
    app = App(cfg, files, embedder)
    yield app
    app.close()


# -- pages and review ------------------------------------------------------------------------------------------------


def test_the_pages_are_served_with_their_csrf_token_and_local_assets(library: App) -> None:
    r = library.client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/review"
    response = library.client.get("/review")
    page = response.text
    assert f'content="{library.access.csrf}"' in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    assert "default-src 'self'" in response.headers["content-security-policy"]  # and nothing else runs
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in page
        assert library.client.get(asset).status_code == 200
    assert 'id="search-form"' in library.client.get("/search").text


def test_review_lists_duplicate_groups_largest_first_with_keeper_and_evidence(library: App) -> None:
    data = library.groups()
    groups = data["groups"]
    assert data["summary"]["groups"] == len(groups) == 2
    assert [g["reclaimable"] for g in groups] == sorted((g["reclaimable"] for g in groups), reverse=True)
    chelsea = {str(p) for p in library.files["chelsea"]}
    coffee = {str(p) for p in library.files["coffee"]}
    assert {frozenset(m["path"] for m in g["members"]) for g in groups} == {frozenset(chelsea), frozenset(coffee)}
    for g in groups:
        assert sum(m["keeper"] for m in g["members"]) == 1
        assert g["keeper"] in {m["path"] for m in g["members"]}
        assert g["pairs"] and all(p["tier"] in ("exact", "copy") and p["cosine"] > 0.8 for p in g["pairs"])
        # geometry confirmed each member's joining; a copy of a copy may carry no geometry of its own
        assert any(p["inliers"] for p in g["pairs"])
    turned = next(
        p for g in groups for p in g["pairs"] if p["b"].endswith("IMG_0002.jpg") or p["a"].endswith("IMG_0002.jpg")
    )
    assert turned["view"] != "identity"  # the evidence says the copy is turned
    # page by page
    first, second = library.groups(size=1, page=1), library.groups(size=1, page=2)
    assert first["pages"] == second["pages"] == 2
    assert [g["id"] for g in first["groups"] + second["groups"]] == [g["id"] for g in groups]
    shots = library.groups("similar")
    assert shots["tier"] == "similar" and shots["noun"] == "similar-shot groups"
    assert shots["summary"]["groups"] == library.client.get("/api/status").json()["similar_groups"]


def _content_hash(cfg: Config, path: Path | str) -> str:
    store = Store(cfg.db, readonly=True)
    try:
        rec = store.files.by_path(str(path))
        assert rec is not None and rec.content_hash
        return rec.content_hash
    finally:
        store.close()


def test_thumbnails_are_cached_by_content_and_previews_are_large(library: App) -> None:
    path = library.files["chelsea"][0]
    r = library.client.get("/api/thumb", params={"path": str(path)})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 200
    cached = ThumbnailCache(library.cfg.thumbs_path).path_for(_content_hash(library.cfg, path), 200)
    assert cached.read_bytes() == r.content  # kept beside the database, under the content hash
    marked = r.content + b"\0cached"
    cached.write_bytes(marked)
    assert library.client.get("/api/thumb", params={"path": str(path)}).content == marked  # served from the cache
    cached.unlink()
    big = library.client.get("/api/preview", params={"path": str(path)})
    assert big.status_code == 200 and max(Image.open(io.BytesIO(big.content)).size) == 640


def test_a_page_of_groups_is_quick_once_its_thumbnails_are_cached(library: App) -> None:
    paths = [m["path"] for g in library.groups()["groups"] for m in g["members"]]
    for p in paths:  # first view: thumbnails made
        assert library.client.get("/api/thumb", params={"path": p}).status_code == 200
    start = time.perf_counter()
    library.groups()
    for p in paths:
        assert library.client.get("/api/thumb", params={"path": p}).status_code == 200
    assert time.perf_counter() - start < 5  # generous for a loaded CI box; README gives the measured figure


def test_the_static_report_reuses_the_thumbnail_cache(library: App) -> None:
    import base64

    from dupwatch.daemon.html import render_html

    path = library.files["coffee"][0]
    cache = ThumbnailCache(library.cfg.thumbs_path)
    entry = cache.path_for(_content_hash(library.cfg, path), 200)
    entry.unlink(missing_ok=True)
    store = Store(library.cfg.db, readonly=True)
    try:
        page = render_html(build_report(store, KeeperPolicy()), cache=cache)
    finally:
        store.close()
    assert entry.exists()  # made by the report, for the app to use (and the other way round)
    assert base64.b64encode(entry.read_bytes()).decode() in page


# -- refusals ----------------------------------------------------------------------------------------------------------


def test_paths_outside_the_roots_traversal_and_symlinks_are_refused(library: App, tmp_path: Path) -> None:
    root = library.files["chelsea"][0].parents[1]
    inside = str(library.files["chelsea"][0])
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photo_jpeg("camera"))
    (root / "cats" / "link_out.jpg").symlink_to(outside)
    (root / "cats" / "link_in.jpg").symlink_to(inside)
    (root / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    try:
        refused = {
            f"{root}/cats/../../secret.jpg": 403,
            f"{root}/cats/./chelsea.jpg": 403,
            f"{root}//cats/chelsea.jpg": 403,
            "/etc/passwd": 403,
            str(outside): 403,
            f"{root}/cats/link_out.jpg": 403,
            f"{root}/cats/link_in.jpg": 403,
            f"{root}/linkdir/secret.jpg": 403,
            f"{root}/cats/nothing.jpg": 404,
            "relative/chelsea.jpg": 400,
            "": 400,
        }
        for path, status in refused.items():
            for endpoint in ("/api/thumb", "/api/preview"):
                r = library.client.get(endpoint, params={"path": path})
                assert r.status_code == status, (endpoint, path, r.text)
                assert r.headers["content-type"] == "application/json" and r.json()["error"]
        # encoded slashes and dots, written into the URL by hand (not re-encoded by the client)
        for raw in (f"{root}/cats/%2e%2e/%2e%2e/secret.jpg", "%2Fetc%2Fpasswd", f"{root}%2F..%2F..%2Fsecret.jpg"):
            r = library.client.get("/api/thumb?path=" + raw)
            assert r.status_code == 403, (raw, r.text)
        for raw in (
            "/static/../../../../etc/passwd",
            "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/static/..%2f..%2fapp.py",
        ):
            r = library.client.get(raw)
            assert r.status_code == 404 and b"root:" not in r.content, raw
        # search by path: the same rules
        for path in (str(outside), f"{root}/cats/link_out.jpg", f"{root}/cats/../../secret.jpg"):
            assert library.client.post("/api/search", data={"path": path}).status_code == 403, path
        assert library.client.get("/api/thumb", params={"path": inside}).status_code == 200
    finally:
        for link in (root / "cats" / "link_out.jpg", root / "cats" / "link_in.jpg", root / "linkdir"):
            link.unlink()


def test_uploads_that_are_too_large_empty_or_not_images_are_refused(library: App) -> None:
    cfg = Config(db=library.cfg.db, workers=0, max_upload_mb=1)
    client = TestClient(create_app(cfg, library.searcher, Writer(cfg), Access()), base_url=BASE)
    big = os.urandom(2 * 1024 * 1024)
    r = client.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunked():  # no Content-Length: the limit holds on the bytes that arrive
        for _ in range(3):
            yield os.urandom(512 * 1024)

    r = client.post("/api/search", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    r = client.post("/api/search", files={"image": ("notes.jpg", b"not the pixels you want " * 50, "image/jpeg")})
    assert r.status_code == 400 and r.json()["error"].startswith("not an image dupwatch can read")
    r = client.post("/api/search", files={"image": ("empty.jpg", b"", "image/jpeg")})
    assert r.status_code == 400
    assert client.post("/api/search", data={"k": "3"}).status_code == 400
    client.close()


def test_changes_need_the_csrf_header_and_a_same_origin(fresh: App) -> None:
    g = fresh.group_of(fresh.files["chelsea"][0])
    url = f"/api/groups/{g['id']}/resolve"
    assert fresh.client.post(url, json={}).status_code == 403
    assert fresh.client.post(url, json={}, headers={"X-CSRF-Token": "guess"}).status_code == 403
    assert fresh.post(url, {}, headers={"Origin": "http://evil.example"}).status_code == 403
    for p in fresh.files["chelsea"]:
        assert p.exists()  # nothing moved
    assert fresh.client.get("/api/log").json()["actions"] == []


def test_a_non_local_bind_needs_the_token_for_every_request(library: App) -> None:
    access = Access.for_bind("0.0.0.0", None)
    assert access.token  # made, for the CLI to print
    client = TestClient(create_app(library.cfg, None, Writer(library.cfg), access), base_url="http://192.0.2.7:8765")
    for url in ("/review", "/api/groups", "/api/status", f"/api/thumb?path={library.files['chelsea'][0]}"):
        r = client.get(url)
        assert r.status_code == 401 and "token" in r.json()["error"], url
    r = client.post("/api/groups/1/resolve", json={}, headers={"X-CSRF-Token": access.csrf})
    assert r.status_code == 401
    assert client.post("/api/search", data={"path": "/x"}).status_code == 401
    assert client.get("/api/groups", headers={"X-Dupwatch-Token": "wrong"}).status_code == 401
    assert client.get("/api/groups", headers={"Authorization": f"Bearer {access.token}"}).status_code == 200
    r = client.get(f"/review?token={access.token}")  # the printed link: sets the cookie for the page's requests
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/api/groups").status_code == 200  # the cookie now
    client.close()


def test_on_loopback_a_foreign_host_header_is_refused(library: App) -> None:
    r = library.client.get("/api/groups", headers={"Host": "evil.example:8765"})
    assert r.status_code == 400
    assert library.client.get("/api/groups", headers={"Host": "localhost:8765"}).status_code == 200


# -- search ------------------------------------------------------------------------------------------------------------


def test_search_by_upload_returns_the_copies_best_first(library: App) -> None:
    from dupwatch.daemon.demo import load_photo, scale_to

    buf = io.BytesIO()
    scale_to(load_photo("chelsea"), 500).save(buf, "PNG")  # a copy the database has never seen
    files = {"image": ("query.png", buf.getvalue(), "image/png")}
    r = library.client.post("/api/search", files=files, data={"k": "4"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 4
    chelsea = {str(p) for p in library.files["chelsea"]}
    top = results[:3]
    assert {h["path"] for h in top} == chelsea
    assert all(h["tier"] == "copy" and h["cosine"] > 0.9 and h["inliers"] for h in top)
    assert results[3]["path"] not in chelsea and results[3]["tier"] != "copy"
    assert [h["cosine"] for h in top] == sorted((h["cosine"] for h in top), reverse=True)


def test_search_by_path_finds_the_turned_copy_and_not_itself(library: App) -> None:
    query = library.files["coffee"][0]
    r = library.client.post("/api/search", data={"path": str(query), "k": "5"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert str(query) not in {h["path"] for h in results}
    first = results[0]
    assert first["path"] == str(library.files["coffee"][1]) and first["tier"] == "copy" and first["view"] != "identity"
    files = {"image": ("same.jpg", query.read_bytes(), "image/jpeg")}
    exact = library.client.post("/api/search", files=files, data={"k": "2"}).json()["results"]
    assert exact[0]["path"] == str(query) and exact[0]["tier"] == "exact"


# -- decisions --------------------------------------------------------------------------------------------------------


def test_changing_the_keeper_is_kept_and_resolve_honours_it(fresh: App) -> None:
    from click.testing import CliRunner

    from dupwatch.daemon.cli import main

    g = fresh.group_of(fresh.files["chelsea"][0])
    small = str(fresh.files["chelsea"][1])
    assert g["keeper"] != small
    r = fresh.post(f"/api/groups/{g['id']}/keeper", {"path": small})
    assert r.status_code == 200, r.text
    g = fresh.group_of(fresh.files["chelsea"][0])
    assert g["keeper"] == small and g["keeper_reason"] == "chosen by you"
    assert [m["path"] for m in g["members"] if m["keeper"]] == [small]
    # the CLI sees the same keeper (one decision, stored by content)
    out = CliRunner().invoke(main, ["--db", str(fresh.cfg.db), "report", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert small in {grp["keeper"] for grp in json.loads(out.output)["groups"]}
    # a member of another group cannot be made this group's keeper
    other = fresh.group_of(fresh.files["coffee"][0])
    assert fresh.post(f"/api/groups/{other['id']}/keeper", {"path": small}).status_code == 409
    r = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"})
    assert r.status_code == 200 and r.json()["keeper"] == small
    assert Path(small).exists() and not fresh.files["chelsea"][0].exists()


def test_not_duplicates_for_a_member_and_a_group_and_taking_it_back(fresh: App) -> None:
    chelsea = fresh.files["chelsea"]
    g = fresh.group_of(chelsea[0])
    r = fresh.post(f"/api/groups/{g['id']}/ignore", {"path": str(chelsea[2])})
    assert r.status_code == 200 and r.json()["pairs"] == 2
    g = fresh.group_of(chelsea[0])
    assert str(chelsea[2]) not in {m["path"] for m in g["members"]} and len(g["members"]) == 2
    coffee = fresh.group_of(fresh.files["coffee"][0])
    assert fresh.post(f"/api/groups/{coffee['id']}/ignore", {}).status_code == 200
    assert len(fresh.groups()["groups"]) == 1  # the coffee group dissolved
    log = fresh.client.get("/api/log").json()["ignored"]
    assert len(log) == 3
    coffee_decision = next(d for d in log if str(fresh.files["coffee"][0]) in d["paths_a"] + d["paths_b"])
    assert fresh.post(f"/api/ignored/{coffee_decision['id']}/unignore").status_code == 200
    assert len(fresh.groups()["groups"]) == 2  # back, from the stored pairs
    assert fresh.post("/api/ignored/9999/unignore").status_code == 409


def test_resolve_moves_to_the_quarantine_and_undo_from_the_log_puts_everything_back(fresh: App) -> None:
    root = fresh.files["chelsea"][0].parents[1]
    before = tree_digest(root)
    g = fresh.group_of(fresh.files["chelsea"][0])
    r = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["moved"] == 2 and out["refused"] == [] and out["failed"] == []
    moved = [m["path"] for m in g["members"] if not m["keeper"]]
    quarantine = fresh.cfg.quarantine_path.resolve()
    for p in moved:
        assert not os.path.exists(p) and (quarantine / p.lstrip("/")).exists()
    assert Path(g["keeper"]).exists()
    assert all(g2["id"] != g["id"] for g2 in fresh.groups()["groups"])
    log = fresh.client.get("/api/log").json()["actions"]
    assert log[0]["id"] == out["action"] and not log[0]["undone"] and log[0]["done"] == 2
    r = fresh.post(f"/api/actions/{out['action']}/undo")
    assert r.status_code == 200 and r.json() == {"action": out["action"], "restored": 2, "undone": True, "refused": []}
    assert tree_digest(root) == before
    assert fresh.client.get("/api/log").json()["actions"][0]["undone"]
    assert fresh.group_of(fresh.files["chelsea"][0])["id"] == g["id"]  # the group is back under its id
    r = fresh.post(f"/api/actions/{out['action']}/undo")
    assert r.status_code == 409 and "already undone" in r.json()["error"]


def test_undo_says_not_undone_when_a_file_cannot_go_back(fresh: App) -> None:
    g = fresh.group_of(fresh.files["coffee"][0])
    out = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"}).json()
    moved = next(m["path"] for m in g["members"] if not m["keeper"])
    Path(moved).write_bytes(b"someone else's file now")  # the place is taken
    r = fresh.post(f"/api/actions/{out['action']}/undo")
    assert r.status_code == 409 and r.json()["undone"] is False and r.json()["refused"]
    assert Path(moved).read_bytes() == b"someone else's file now"
    assert not fresh.client.get("/api/log").json()["actions"][0]["undone"]


def test_resolve_refuses_as_the_cli_does_when_the_keeper_changed(fresh: App) -> None:
    g = fresh.group_of(fresh.files["chelsea"][0])
    keeper = Path(g["keeper"])
    keeper.write_bytes(keeper.read_bytes() + b"edited")
    r = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"})
    assert r.status_code == 409
    assert r.json()["refused"] and all("refused" in x["reason"] for x in r.json()["refused"])
    assert all(Path(m["path"]).exists() for m in g["members"])
    assert fresh.post("/api/groups/999/resolve", {"mode": "move"}).status_code == 409


def test_a_change_while_another_process_writes_is_refused_with_a_hint(fresh: App) -> None:
    import subprocess
    import sys

    g = fresh.group_of(fresh.files["chelsea"][0])
    code = (
        "import sys, time; from pathlib import Path; from dupwatch.daemon.lock import WriterLock; "
        "WriterLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(fresh.cfg.lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"})
        assert r.status_code == 409 and "watch --serve" in r.json()["error"]
        assert all(Path(m["path"]).exists() for m in g["members"])
        assert fresh.groups()["summary"]["groups"] == 2  # reading goes on
    finally:
        holder.kill()
        holder.wait()
    assert fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"}).status_code == 200


# -- live ------------------------------------------------------------------------------------------------------------


def _events(text: str) -> list[dict]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "status":
            out.append(json.loads(fields["data"]))
    return out


def test_live_events_report_a_new_duplicate_group_without_a_reload(fresh: App, embedder, tmp_path: Path) -> None:
    later = tmp_path / "photos" / "later"
    later.mkdir()
    (later / "astronaut_copy.png").write_bytes(_png(fresh.files["astronaut"][0]))

    def add_later() -> None:
        time.sleep(1.5)
        scan_folder(later.parent, fresh.cfg.db, embedder, workers=0).close()

    t = threading.Thread(target=add_later)
    t.start()
    r = fresh.client.get("/api/events", params={"timeout": 8})
    t.join()
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[0]["groups"] == 2 and events[0]["daemon"] is None
    assert events[-1]["groups"] == 3 and events[-1]["gen"] > events[0]["gen"]


def _png(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).save(buf, "PNG")
    return buf.getvalue()


def test_the_daemon_follows_changes_made_beside_it(fresh: App, embedder) -> None:
    """Inside `watch --serve` the app's resolve and undo are written through their own connection: the daemon's
    matcher catches up, so a resolved file is no candidate any more and an undone one is again."""
    from dupwatch.daemon.pipeline import open_pipeline

    store = Store(fresh.cfg.db)
    with open_pipeline(fresh.cfg, store, embedder) as pipeline:
        g = fresh.group_of(fresh.files["chelsea"][0])
        moved = [m["path"] for m in g["members"] if not m["keeper"]]
        ids = [r.id for p in moved if (r := store.files.by_path(p)) is not None]
        assert all(i in pipeline.matcher.ahash_of for i in ids)
        assert pipeline.catch_up() == 0  # nobody else wrote
        out = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "move"}).json()
        assert pipeline.catch_up() == len(ids)
        assert not any(i in pipeline.matcher.ahash_of for i in ids)
        probe = pipeline.probe_file(str(fresh.files["chelsea"][0]))
        assert not set(ids) & {m.other for m in pipeline.matcher.find(probe)}
        fresh.post(f"/api/actions/{out['action']}/undo")
        assert pipeline.catch_up() == len(ids)
        assert set(ids) <= {m.other for m in pipeline.matcher.find(probe)}
    store.close()


def test_the_cli_keep_command_sets_the_same_decision(fresh: App) -> None:
    from click.testing import CliRunner

    from dupwatch.daemon.cli import main

    small = str(fresh.files["chelsea"][1])
    r = CliRunner().invoke(main, ["--db", str(fresh.cfg.db), "keep", small])
    assert r.exit_code == 0, r.output
    assert fresh.group_of(fresh.files["chelsea"][0])["keeper"] == small
    lone = str(fresh.files["astronaut"][0])
    r = CliRunner().invoke(main, ["--db", str(fresh.cfg.db), "keep", lone])
    assert r.exit_code == 1 and "in no group" in r.output


def test_resolve_to_the_desktop_trash_and_back(fresh: App) -> None:
    g = fresh.group_of(fresh.files["coffee"][0])
    moved = [m["path"] for m in g["members"] if not m["keeper"]]
    r = fresh.post(f"/api/groups/{g['id']}/resolve", {"mode": "trash"})
    assert r.status_code == 200 and r.json()["to"] == "the trash" and r.json()["moved"] == len(moved)
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "files"
    assert not any(Path(p).exists() for p in moved) and any(trash.iterdir())
    assert fresh.client.get("/api/log").json()["actions"][0]["mode"] == "trash"
    r = fresh.post(f"/api/actions/{r.json()['action']}/undo")
    assert r.status_code == 200 and r.json()["undone"]
    assert all(Path(p).exists() for p in moved)
