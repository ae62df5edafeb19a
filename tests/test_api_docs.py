"""/docs works without a network: Swagger UI's files are served by the app itself."""

from __future__ import annotations

import re

import httpx


async def test_the_docs_page_loads_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", r.text)
    found = [u for pair in urls for u in pair if u]
    assert "/openapi.json" in found
    assert not [u for u in found if "//" in u], found  # nothing absolute: no CDN
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        assert f"/docs/assets/{asset}" in found
        served = await client.get(f"/docs/assets/{asset}")
        assert served.status_code == 200 and kind in served.headers["content-type"]
        assert len(served.content) > 10_000
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200


async def test_no_cdn_pages_are_left(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")]
