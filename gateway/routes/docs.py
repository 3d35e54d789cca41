"""The API's documents: Swagger UI at /docs, served with its assets from the `fastapi-offline`
package (nothing is fetched from a CDN, so it loads behind a firewall; the package's ReDoc is
not served, as it asks a CDN for its logo), and the AsyncAPI document of the events beside the
OpenAPI one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from gateway.problems import Problem
from schemas.export import asyncapi_document

router = APIRouter(tags=["docs"])

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
ASSETS_URL = "/docs/assets"
TITLE = "Embedding Flywheel gateway"


@router.get("/asyncapi.json")
async def asyncapi() -> dict[str, Any]:
    return asyncapi_document()


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json", title=f"{TITLE} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(f"{ASSETS_URL}/{{name}}", include_in_schema=False)
async def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:  # only the package's own files, by name
        raise Problem(404, f"no documentation asset {name!r}")
    return FileResponse(ASSETS_DIR / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
