"""The API's /docs page (Swagger UI) served from this process: it works with no network.

Swagger UI's script, stylesheet and icon come from the `fastapi-offline` package (a dependency that
ships Swagger UI's dist files; 5.x, which reads the OpenAPI 3.1 document FastAPI writes) and are
served under ASSETS; the page is FastAPI's own, pointed at them instead of a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS = "/docs"
ASSETS = "/docs/assets"


def swagger_ui_files() -> Path:
    """The folder with swagger-ui-bundle.js, swagger-ui.css and favicon.png."""
    return Path(str(files("fastapi_offline") / "static"))


def add_docs(app: FastAPI, openapi_url: str, title: str) -> None:
    """GET /docs and its assets (not in the OpenAPI document)."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url, title=f"{title} - docs",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None})  # the validator badge would be fetched from swagger.io
    body = page.body

    async def docs() -> HTMLResponse:
        return HTMLResponse(body)

    app.add_api_route(DOCS, docs, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_files()), name="docs-assets")
