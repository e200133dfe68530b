"""Who may ask what: the Host header (no DNS rebinding onto 127.0.0.1), the token (any bind that is not loopback),
the CSRF check on every request that changes something, and which paths may be shown (live files inside the roots,
no `..`, no symlink anywhere on the way)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dupwatch.daemon.files import is_under

TOKEN_COOKIE = "dupwatch_token"
TOKEN_HEADER = "x-dupwatch-token"
CSRF_HEADER = "x-csrf-token"
# POSTs that change nothing (a search): a token is still needed where one is, but no CSRF header
READ_ONLY_POSTS = frozenset({"/api/search"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The rules of one running server. `token` None: loopback only, no token asked."""

    token: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @classmethod
    def for_bind(cls, host: str, token: str | None) -> Access:
        """A non-loopback bind always has a token: the one given, or a new one (the caller prints it)."""
        if token is None and not is_loopback(host):
            token = secrets.token_urlsafe(24)
        return cls(token=token)

    def host_allowed(self, header: str) -> bool:
        """On loopback, only loopback names (a page on evil.example resolving to 127.0.0.1 is refused); on any
        other bind the token protects and any Host is fine."""
        if self.token is not None:
            return True
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        return is_loopback(name.strip("[]"))

    def token_given(self, request: Request) -> bool:
        if self.token is None:
            return True
        offered = [
            request.headers.get(TOKEN_HEADER, ""),
            request.cookies.get(TOKEN_COOKIE, ""),
            request.query_params.get("token", ""),
        ]
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        return any(o and hmac.compare_digest(o, self.token) for o in offered)

    def csrf_ok(self, request: Request) -> bool:
        """A state-changing request carries the page's CSRF token in a header (a cross-site form cannot set one),
        and, where the browser names its origin, comes from this server."""
        offered = request.headers.get(CSRF_HEADER, "")
        if not (offered and hmac.compare_digest(offered, self.csrf)):
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host


class Guard:
    """ASGI middleware: every HTTP request passes the Host, token and CSRF checks before any route sees it. A
    token given as ?token= is kept in an HttpOnly cookie, so links and images on the page work without it."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await json_error(*refusal)(scope, receive, send)
            return
        if self.access.token is None or request.query_params.get("token") is None:
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie()
        cookie[TOKEN_COOKIE] = self.access.token
        cookie[TOKEN_COOKIE]["httponly"] = True
        cookie[TOKEN_COOKIE]["samesite"] = "Strict"
        cookie[TOKEN_COOKIE]["path"] = "/"
        header = cookie.output(header="").strip().encode("latin-1")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", header)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        if not self.access.host_allowed(request.headers.get("host", "")):
            return 400, "unexpected Host header: this server answers to localhost only"
        if not self.access.token_given(request):
            return 401, "a token is needed: open the address printed by 'dupwatch serve' (it ends in ?token=...)"
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if request.url.path in READ_ONLY_POSTS:
                return None
            if not self.access.csrf_ok(request):
                return 403, "missing or wrong CSRF token (changes are made from dupwatch's own page)"
        return None


class PathRefused(Exception):
    """A path the app will not show or act on; `status` is the HTTP answer (403 outside, 404 unknown)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def plain_path(raw: str, roots: Sequence[str]) -> str:
    """`raw` if it is an absolute, normalised path inside one of the roots with no symlink on the way (the real
    path is the path itself) to a regular file; else PathRefused. Encoded slashes and dots arrive decoded here and
    are judged like any others."""
    if not raw or "\0" in raw or not raw.startswith("/"):
        raise PathRefused(400, "an absolute path is needed")
    if os.path.normpath(raw) != raw:  # normpath collapses '..', '.' and inner '//'
        raise PathRefused(403, "the path is not in plain form (no '..', '.', '//')")
    if not any(is_under(raw, r) for r in roots):
        raise PathRefused(403, "outside the watched folders")
    try:
        st = os.lstat(raw)
        real = os.path.realpath(raw)
    except OSError:
        raise PathRefused(404, "no such file") from None
    if stat.S_ISLNK(st.st_mode) or real != raw:
        raise PathRefused(403, "a symbolic link, or a path through one (links are not followed)")
    if not stat.S_ISREG(st.st_mode):
        raise PathRefused(403, "not a regular file")
    return raw


def json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)
