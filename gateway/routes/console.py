"""The admin web console: a static single-page app under /console.

The page itself needs no key (it holds no data); it asks for an admin API key once per
browser session and sends it as a Bearer token to the REST API. Assets ship inside the
package (gateway/console/static), nothing is fetched from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from gateway.problems import Problem

router = APIRouter(tags=["console"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _serve(name: str) -> FileResponse:
    path = STATIC_DIR / name
    # Only the files shipped in the static folder itself: no sub-paths, no traversal.
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in MEDIA_TYPES \
            or not path.is_file():
        raise Problem(404, f"no console asset {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


@router.get("/console")
async def console() -> FileResponse:
    return _serve("index.html")


@router.get("/console/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.get("/console/static/{name}")
async def console_asset(name: str) -> FileResponse:
    return _serve(name)
