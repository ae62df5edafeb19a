"""The OpenAPI documentation page (``/docs``), served without a network.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN (jsDelivr), so on a laptop without a
network (the embedded deployment's promise) it stayed blank. Swagger UI's files come from the
``swagger-ui-bundle-v2`` package instead (Swagger UI 5: FastAPI writes OpenAPI 3.1) and are served
under ``/docs/assets``. FastAPI's ReDoc page (also from a CDN) is not offered.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def mount_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI on the app's OpenAPI document) and its files. The app must be built
    with ``docs_url=None`` (FastAPI's CDN page)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    oauth2_redirect = f"{DOCS_URL}/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url="/static/icon.svg",
            oauth2_redirect_url=oauth2_redirect,
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
