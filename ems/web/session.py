"""The page's session: the API's bearer token, carried in an HttpOnly, SameSite=Strict cookie.

The page's script never sees the token (an injected script could not steal it). Because a cookie is
sent by the browser on its own, every change made with it must also carry a CSRF token in the
X-CSRF-Token header: a value derived from the session token that only a page of this origin can read
(GET /api/session, same-origin, no CORS). Bearer-token clients (scripts, SCADA tools) send no cookie
and need no CSRF token. SameSite=Strict already keeps other sites' requests from carrying the cookie;
the CSRF token is the second lock, for browsers and proxies that do not honour it.
"""
from __future__ import annotations

import hashlib
import hmac
import re

from aiohttp import web

from ems.records.auth import AuthError

COOKIE = "ems_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")     # what Users issues (secrets.token_urlsafe)


def request_token(request: web.Request) -> str | None:
    """The bearer token of the Authorization header, else the session cookie's; None when neither."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    token = request.cookies.get(COOKIE)
    return token if token and TOKEN_RE.match(token) else None


def csrf_token(token: str) -> str:
    return hashlib.sha256(b"ems-csrf\0" + token.encode()).hexdigest()


def check_csrf(request: web.Request, token: str) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode()[:128], csrf_token(token).encode()):
        raise AuthError(403, f"a change from the page needs its CSRF token ({CSRF_HEADER}): reload the page")


def set_session_cookie(resp: web.Response, token: str, request: web.Request) -> None:
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure)


def clear_session_cookie(resp: web.Response) -> None:
    resp.del_cookie(COOKIE, path="/")


def keep_alive(request: web.Request) -> None:
    """A stream that delivers is not idle: touch the connection gate's idle timer (ems.comm.limits), which
    otherwise counts only what the client sends, and a live stream's client sends nothing."""
    transport = request.transport
    proto = transport.get_protocol() if transport is not None else None
    timer = getattr(proto, "timer", None)
    if timer is not None:
        timer.touch()
