"""The routes of `dupwatch serve`. Pages are one template and one script (no build step, nothing from a CDN);
everything else is JSON under /api. Reads open the database read-only per request; changes go through `Writer`,
exactly as the CLI's `resolve`, `undo`, `ignore` and `keep` do (same functions, same journal, same refusals)."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message

from dupwatch.daemon.actions import ActionError, Step, execute, plan, undo
from dupwatch.daemon.config import Config
from dupwatch.daemon.ignoring import IgnoreError, ignore_group, ignore_member, unignore_id
from dupwatch.daemon.keeper import KeeperPolicy
from dupwatch.daemon.keeping import KeepError, keep
from dupwatch.daemon.lock import AlreadyRunning, WriterLock
from dupwatch.daemon.records import FileRecord, FileStatus
from dupwatch.daemon.store import ActionMode, Store
from dupwatch.daemon.store.graph import DUPLICATES, SHOTS
from dupwatch.daemon.thumbnails import THUMB_SIDE, ThumbnailCache, thumbnail_jpeg
from dupwatch.daemon.web import live
from dupwatch.daemon.web.guard import Access, Guard, PathRefused, json_error, plain_path
from dupwatch.daemon.web.review import PAGE_SIZE, Reports, action_log, review_page
from dupwatch.daemon.web.search import Searcher, SearchError

log = logging.getLogger(__name__)

PREVIEW_SIDE = 1600
# the page runs only its own script and styles, shows only this server's images (and the upload being searched)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


class Busy(Exception):
    """Another process writes to the database (a running `watch` or `scan`)."""


class Writer:
    """The database for one change. Serving alone, the app takes the one-writer lock for the change (a running
    `watch` or `scan` holds it: the change is refused with a hint); inside `watch --serve` the process holds it
    already and the daemon's loop follows the change (Pipeline.catch_up). One change at a time either way."""

    def __init__(self, cfg: Config, take_lock: bool = True) -> None:
        self.cfg = cfg
        self.take_lock = take_lock
        self._one = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[Store]:
        with self._one:
            lock = None
            if self.take_lock:
                try:
                    lock = WriterLock(self.cfg.lock_path).acquire()
                except AlreadyRunning as e:
                    raise Busy(
                        f"{e}: review beside a running daemon with 'dupwatch watch --serve', or stop it first"
                    ) from None
            try:
                with Store(self.cfg.db) as store:
                    yield store
            finally:
                if lock is not None:
                    lock.release()


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value or default), low), high)
    except ValueError:
        return default


def _reasons(steps: list[Step]) -> list[dict[str, str | None]]:
    return [{"path": s.file.path, "reason": s.refused} for s in steps]


def _similar(tier: object) -> bool:
    """Similar-shot groups were asked for (else duplicate groups)."""
    return tier == "similar"


def create_app(cfg: Config, searcher: Searcher | None, writer: Writer, access: Access) -> Starlette:
    """The app: `searcher` None serves no search (a reviewer without the CNN loaded, e.g. in tests of review)."""
    thumbs = ThumbnailCache(cfg.thumbs_path)
    policy = KeeperPolicy.from_config(cfg)
    reports = Reports(policy)
    env = Environment(loader=PackageLoader("dupwatch.daemon", "templates"), autoescape=select_autoescape(["j2"]))
    page = env.get_template("serve.html.j2")
    limit = cfg.max_upload_mb * 1024 * 1024

    def _live_record(store: Store, raw: str) -> FileRecord:
        path = plain_path(raw, store.decisions.roots())
        rec = store.files.by_path(path)
        if rec is None or rec.status != FileStatus.OK:
            raise PathRefused(404, "not a photo in the database")
        return rec

    # -- pages -----------------------------------------------------------------------------------------------------

    def index(request: Request) -> Response:
        return RedirectResponse("/review", status_code=303)

    def view(request: Request) -> Response:
        html = page.render(view=request.url.path.strip("/"), csrf=access.csrf, page_size=PAGE_SIZE)
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    # -- reading ---------------------------------------------------------------------------------------------------

    def groups(request: Request) -> Response:
        q = request.query_params
        similar = _similar(q.get("tier"))
        with Store(cfg.db, readonly=True) as store:
            gen = store.gen  # read first: a change after it makes the page reload again
            report = reports.get(store, similar)
        page_no, size = _int(q.get("page"), 1, 1, 1 << 30), _int(q.get("size"), PAGE_SIZE, 1, 500)
        return JSONResponse(review_page(report, gen, page_no, size))

    def image(request: Request) -> Response:
        """/api/thumb?path=... (cached by content) and /api/preview?path=... (large, made on demand)."""
        preview = request.url.path.endswith("/preview")
        try:
            with Store(cfg.db, readonly=True) as store:
                rec = _live_record(store, request.query_params.get("path", ""))
        except PathRefused as e:
            return json_error(e.status, e.reason)
        if preview:
            data = thumbnail_jpeg(rec.path, PREVIEW_SIDE)
        else:
            data = thumbs.get(rec.path, rec.content_hash, THUMB_SIDE)
        if data is None:
            return json_error(422, "the file cannot be read now")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    def status(request: Request) -> Response:
        return JSONResponse(live.snapshot(cfg))

    def log_(request: Request) -> Response:
        with Store(cfg.db, readonly=True) as store:
            return JSONResponse(action_log(store))

    async def events(request: Request) -> Response:
        timeout = float(_int(request.query_params.get("timeout"), 300, 1, 3600))
        stream = live.events(lambda: live.snapshot(cfg), interval=1.0, timeout=timeout)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- search ----------------------------------------------------------------------------------------------------

    async def search(request: Request) -> Response:
        if searcher is None:
            return json_error(503, "search is off in this server")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return json_error(413, f"upload too large ({int(declared):,} bytes; limit {cfg.max_upload_mb} MB)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return json_error(413, f"upload too large (over the {cfg.max_upload_mb} MB limit)")
        whole = bytes(body)

        async def replay() -> Message:
            return {"type": "http.request", "body": whole, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
        except Exception as e:  # a malformed multipart body: the parser's own words
            return json_error(400, f"cannot read the form: {e}")
        k = _int(str(form.get("k") or request.query_params.get("k") or ""), 10, 1, 100)
        upload = form.get("image")
        given = form.get("path")
        try:
            if isinstance(upload, UploadFile):
                data = await upload.read()
                if not data:
                    return json_error(400, "the uploaded image is empty")
                hits, query = await _search_bytes(data, upload.filename or "upload", k), upload.filename
            elif isinstance(given, str) and given:
                with Store(cfg.db, readonly=True) as store:
                    path = plain_path(given, store.decisions.roots())
                hits, query = await searcher.search(path, k, exclude=path), path
            else:
                return json_error(400, "send an image (multipart field 'image') or a path (form field 'path')")
        except PathRefused as e:
            return json_error(e.status, e.reason)
        except SearchError as e:
            return json_error(400, f"not an image dupwatch can read: {e}")
        return JSONResponse({"query": query, "k": k, "results": [asdict(h) for h in hits]})

    async def _search_bytes(data: bytes, name: str, k: int) -> list[Any]:
        assert searcher is not None
        suffix = Path(name).suffix.lower()
        suffix = suffix if suffix in cfg.suffixes else ".img"
        with tempfile.TemporaryDirectory(prefix="dupwatch-search-") as tmp:
            path = os.path.join(tmp, "query" + suffix)
            await run_in_threadpool(Path(path).write_bytes, data)
            return await searcher.search(path, k)

    # -- changes ---------------------------------------------------------------------------------------------------

    async def _body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _change(fn: Any, *args: Any) -> Response:
        try:
            with writer.store() as store:
                return fn(store, *args)  # type: ignore[no-any-return]
        except Busy as e:
            return json_error(409, str(e))
        except PathRefused as e:
            return json_error(e.status, e.reason)
        except (ActionError, IgnoreError, KeepError) as e:
            return json_error(409, str(e))

    async def set_keeper(request: Request) -> Response:
        gid = int(request.path_params["gid"])
        body = await _body(request)

        def run(store: Store) -> Response:
            level = SHOTS if _similar(body.get("tier")) else DUPLICATES
            rec = _live_record(store, str(body.get("path", "")))
            if store.graph.group_of(rec.id, level) != gid:
                return json_error(409, f"{rec.path} is not in group {gid} (any more)")
            keep(store, rec, level)
            return JSONResponse({"group": gid, "keeper": rec.path})

        return await run_in_threadpool(_change, run)

    async def ignore(request: Request) -> Response:
        gid = int(request.path_params["gid"])
        body = await _body(request)

        def run(store: Store) -> Response:
            if _similar(body.get("tier")):
                return json_error(400, "similar shots are not duplicates already; 'not duplicates' is for copies")
            if body.get("path"):
                rec = _live_record(store, str(body["path"]))
                if store.graph.group_of(rec.id) != gid:
                    return json_error(409, f"{rec.path} is not in group {gid} (any more)")
                out = ignore_member(store, rec)
                return JSONResponse({"group": gid, "member": rec.path, "pairs": out.pairs})
            out = ignore_group(store, gid)
            return JSONResponse({"group": gid, "pairs": out.pairs})

        return await run_in_threadpool(_change, run)

    async def resolve(request: Request) -> Response:
        gid = int(request.path_params["gid"])
        body = await _body(request)
        mode = ActionMode.TRASH if body.get("mode") == "trash" else ActionMode.MOVE
        quarantine = None if mode == ActionMode.TRASH else cfg.quarantine_path.resolve()

        def run(store: Store) -> Response:
            similar = _similar(body.get("tier"))
            steps = plan(store, mode, quarantine, [gid], policy, similar=similar)
            ready = [s for s in steps if s.refused is None]
            if not ready:
                return json_error(409, "nothing moved: every file was refused", refused=_reasons(steps))
            out = execute(store, steps, mode, quarantine)
            return JSONResponse(
                {
                    "action": out.action_id,
                    "moved": out.moved,
                    "to": "the trash" if quarantine is None else str(quarantine),
                    "keeper": ready[0].keeper.path,
                    "refused": _reasons(out.refused),
                    "failed": _reasons(out.failed),
                }
            )

        return await run_in_threadpool(_change, run)

    async def undo_action(request: Request) -> Response:
        action_id = int(request.path_params["aid"])

        def run(store: Store) -> Response:
            out = undo(store, action_id)
            body = {"action": action_id, "restored": out.restored, "undone": out.complete, "refused": out.refusals}
            return JSONResponse(body, status_code=200 if out.complete else 409)

        return await run_in_threadpool(_change, run)

    async def unignore(request: Request) -> Response:
        decision = int(request.path_params["did"])

        def run(store: Store) -> Response:
            unignore_id(store, decision)
            return JSONResponse({"decision": decision, "taken_back": True})

        return await run_in_threadpool(_change, run)

    static = StaticFiles(directory=str(resources.files("dupwatch.daemon.web") / "static"))
    routes = [
        Route("/", index),
        Route("/review", view),
        Route("/search", view),
        Route("/api/groups", groups),
        Route("/api/thumb", image),
        Route("/api/preview", image),
        Route("/api/status", status),
        Route("/api/log", log_),
        Route("/api/events", events),
        Route("/api/search", search, methods=["POST"]),
        Route("/api/groups/{gid:int}/keeper", set_keeper, methods=["POST"]),
        Route("/api/groups/{gid:int}/ignore", ignore, methods=["POST"]),
        Route("/api/groups/{gid:int}/resolve", resolve, methods=["POST"]),
        Route("/api/actions/{aid:int}/undo", undo_action, methods=["POST"]),
        Route("/api/ignored/{did:int}/unignore", unignore, methods=["POST"]),
        Mount("/static", static, name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Guard, access=access)
    return app
