"""create_app(): builds the context (database, storage, providers, workers) and mounts the API."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from darkroom import __version__, migrate
from darkroom.api_docs import mount_docs
from darkroom.auth.endpoints import router as auth_router
from darkroom.config import Settings
from darkroom.context import AppContext
from darkroom.credits.endpoints import router as credits_router
from darkroom.db import Database
from darkroom.errors import DarkroomError
from darkroom.events.endpoints import task_events_route
from darkroom.events.stream import close_streams_on_stop
from darkroom.events.tail import tail_events
from darkroom.health import router as health_router
from darkroom.middleware import ContentLengthGuard
from darkroom.providers.base import Provider
from darkroom.providers.callbacks import bind_database
from darkroom.providers.endpoints import router as provider_webhooks_router
from darkroom.providers.factory import external_providers
from darkroom.providers.local import LocalProvider
from darkroom.providers.registry import ProviderRegistry
from darkroom.queue.inprocess import InProcessQueue
from darkroom.queue.reaper import reap, reaper_loop
from darkroom.storage.base import Storage
from darkroom.storage.endpoints import router as files_router
from darkroom.storage.local import LocalStorage
from darkroom.storage.signing import UrlSigner
from darkroom.tasks.endpoints import create_route
from darkroom.tasks.endpoints import router as tasks_router
from darkroom.tasks.jobs import TaskRunner
from darkroom.tasks.status import status_route
from darkroom.uploads.endpoints import router as uploads_router
from darkroom.web import i18n
from darkroom.web.mount import mount_web

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def build_storage(settings: Settings) -> Storage:
    if settings.storage_provider in ("s3", "r2"):
        from darkroom.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.data_dir / "files", UrlSigner(settings.secret_key))


def build_context(settings: Settings, providers: Sequence[Provider] | None = None) -> AppContext:
    """``providers`` replaces the configured ones (tests register their doubles this way)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    storage = build_storage(settings)
    if providers is None:
        providers = [
            LocalProvider(max_workers=settings.model_processes, onnx_threads=settings.onnx_threads),
            *external_providers(settings),
        ]
    registry = ProviderRegistry(
        providers,
        default=settings.default_ai_provider,
        routes=settings.routes,
        fallback=settings.provider_fallback,
    )
    bind_database(registry.providers, db)  # webhooks reach waiting runs in any process
    return AppContext(settings=settings, db=db, storage=storage, registry=registry)


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DarkroomError)
    async def _darkroom(request: Request, exc: DarkroomError) -> JSONResponse:
        # The message follows the caller's language (cookie or Accept-Language); the code never changes.
        default = request.app.state.settings.default_locale
        message = i18n.error_message(i18n.choose(request, default), exc.code, exc.message, exc.extra)
        return _error(exc.status_code, exc.code, message, exc.extra or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return _error(422, "validation_error", f"The request is not valid: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
        return JSONResponse(
            {"success": False, "code": code, "message": message},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _error(503, "service_unavailable", "The database is unavailable; try again shortly.")

    # Connecting to PostgreSQL fails below SQLAlchemy's wrapping (refused, starting up, shutting
    # down): the database is away all the same.
    @app.exception_handler(ConnectionError)
    @app.exception_handler(asyncpg.exceptions.PostgresConnectionError)
    @app.exception_handler(asyncpg.exceptions.OperatorInterventionError)
    @app.exception_handler(asyncpg.exceptions.InterfaceError)
    async def _database_connect(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unreachable: %s", exc)
        return _error(503, "service_unavailable", "The database is unavailable; try again shortly.")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal_error", "Something went wrong on our side.")


def create_app(settings: Settings | None = None, providers: Sequence[Provider] | None = None) -> FastAPI:
    """The ASGI app. Pass ``providers`` to use those instead of the configured ones; the app then
    leaves closing them to the caller."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        ctx = build_context(settings, providers)
        app.state.ctx = ctx
        ctx.db.session_info["event_hub"] = ctx.events  # after-commit hooks wake local streams
        queue: InProcessQueue | None = None
        background: list[asyncio.Task[None]] = []
        transport = None
        if settings.broker_url:  # scaled: `darkroom worker` processes run the tasks (queue/broker.py)
            from darkroom.queue.broker import DramatiqTransport

            transport = DramatiqTransport(settings)
            ctx.dispatcher = transport
            log.info("tasks go to the broker; `darkroom worker` processes run them (no workers here)")
        elif settings.run_workers:
            worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
            runner = TaskRunner(ctx, worker_id)
            queue = InProcessQueue(runner.run, settings.worker_concurrency)
            ctx.dispatcher = queue
            queue.start()
            await reap(ctx, grace=0)  # everything pending: the in-process queue starts empty
            grace = settings.redispatch_after_seconds
            background.append(asyncio.create_task(reaper_loop(ctx, grace=grace), name="darkroom-reaper"))
        if settings.events_poll_seconds > 0:  # changes committed by workers in other processes
            background.append(
                asyncio.create_task(
                    tail_events(ctx.db, ctx.events, settings.events_poll_seconds), name="darkroom-event-tail"
                )
            )
        # streams end when the server is told to stop, not after its graceful timeout
        background.append(asyncio.create_task(close_streams_on_stop(ctx.events), name="darkroom-stream-stop"))
        try:
            yield
        finally:
            for job in background:
                job.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if queue is not None:
                await queue.stop()
            if transport is not None:
                await asyncio.to_thread(transport.close)
            if providers is None:
                await ctx.registry.aclose()
            await ctx.db.dispose()

    app = FastAPI(
        title="Darkroom",
        version=__version__,
        summary="Self-hosted AI image service: upload photos, run AI operations, follow tasks live.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: ours is served locally (api_docs)
        redoc_url=None,
    )
    mount_docs(app)
    max_body = settings.max_files * settings.max_file_bytes + 1024 * 1024
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=max_body)
    app.add_middleware(ContentLengthGuard, max_body_size=max_body)
    install_error_handlers(app)
    app.state.settings = settings

    for router in (health_router, auth_router, tasks_router, credits_router, files_router):
        app.include_router(router)
    app.include_router(provider_webhooks_router)
    app.include_router(uploads_router)
    app.router.routes.insert(0, status_route())  # the hot poll first (bench figure 5)
    app.router.routes.insert(1, create_route())  # and the submit (bench figure 3)
    app.router.routes.insert(2, task_events_route())  # and a task's event stream (bench figure 6)
    if settings.metrics_enabled:
        from darkroom import metrics

        app.include_router(metrics.router)
        app.add_middleware(metrics.HttpMetrics)
    mount_web(app)
    return app
