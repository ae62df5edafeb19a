"""Everything the browser app adds to the FastAPI app: event streams, thumbnails, pages, static."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from darkroom.events.endpoints import router as events_router
from darkroom.storage.thumbnails import router as thumbnails_router
from darkroom.web.pages import router as pages_router
from darkroom.web.rendering import HERE


def mount_web(app: FastAPI) -> None:
    app.include_router(events_router)
    app.include_router(thumbnails_router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
