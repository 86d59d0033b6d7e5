"""The page's files and the headers every answer carries.

The page is static: index.html, app.js (Preact + htm views, no build step) and the vendored libraries in
static/vendor (VENDOR.md: versions, licences, why each). Served from the package (they ship in the
wheel: the board needs no Node.js), gzip-compressed once per file and kept in memory (a few hundred kB).
Every answer, API or page, carries a Content-Security-Policy without inline scripts or styles.
"""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
MAX_ASSET_BYTES = 2 * 1024 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".json": "application/json"}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: before any byte is sent, so streams get them too."""
    for k, v in HEADERS.items():
        response.headers.setdefault(k, v)


class Assets:
    def __init__(self, root: Path = STATIC):
        self.root = root.resolve()
        self._cache: dict[Path, tuple[float, bytes, bytes, str]] = {}

    def _load(self, path: Path) -> tuple[bytes, bytes, str]:
        st = path.stat()
        hit = self._cache.get(path)
        if hit is not None and hit[0] == st.st_mtime:
            return hit[1], hit[2], hit[3]
        if st.st_size > MAX_ASSET_BYTES:
            raise web.HTTPNotFound()
        raw = path.read_bytes()
        gz = gzip.compress(raw, 9, mtime=0)
        etag = hashlib.sha256(raw).hexdigest()[:20]
        self._cache[path] = (st.st_mtime, raw, gz, etag)
        return raw, gz, etag

    def respond(self, request: web.Request, rel: str) -> web.Response:
        path = (self.root / rel).resolve()
        if self.root not in path.parents or not path.is_file():
            raise web.HTTPNotFound(text="no such file")
        raw, gz, etag = self._load(path)
        headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}    # revalidate: an update changes the files
        if request.headers.get("If-None-Match") == f'"{etag}"':
            return web.Response(status=304, headers=headers)
        ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=gz, content_type=ctype, headers=headers)
        return web.Response(body=raw, content_type=ctype, headers=headers)


def add_page_routes(app: web.Application, assets: Assets | None = None) -> None:
    assets = assets or Assets()

    async def index(request):
        return assets.respond(request, "index.html")

    async def static(request):
        return assets.respond(request, request.match_info["path"])

    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
    app.on_response_prepare.append(security_headers)
