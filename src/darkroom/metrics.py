"""Prometheus metrics.

Two kinds, because several processes on several machines share one database:

* **From the database, at scrape time** (the same answer from any API process): tasks by status
  and type, queue depth (pending tasks), tasks whose lease expired, credits reserved, captured and
  released since the start (ledger sums; captured = the cost of completed attempts).
* **Process-local** (each process counts what it did): HTTP requests by method, route template and
  status, HTTP latency, task run duration and provider latency. API processes serve them at
  ``GET /metrics``; a ``darkroom worker`` serves its own at ``DARKROOM_METRICS_PORT`` — scrape
  every process and let Prometheus sum.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from darkroom.deps import Context
from darkroom.models import CreditTransaction, Task, TaskAttempt, TaskStatus

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

TASK_DURATION = Histogram(
    "darkroom_task_duration_seconds",
    "Time from claim to finish of one task run, by task type and outcome.",
    ["task_type", "outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "darkroom_provider_latency_seconds",
    "Time an AI provider took for one run, by provider, task type and outcome.",
    ["provider", "task_type", "outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "darkroom_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "darkroom_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    registry=REGISTRY,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpMetrics:
    """ASGI middleware: counts every HTTP answer by its route *template* (``/api/tasks/{task_id}``),
    never the raw path, so ids don't explode the label set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - start)


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return iter(self.metrics)


async def database_metrics(session: AsyncSession) -> list[Metric]:
    tasks = GaugeMetricFamily(
        "darkroom_tasks", "Tasks by status and task type.", labels=["status", "task_type"]
    )
    rows = await session.execute(
        select(Task.status, Task.task_type, func.count()).group_by(Task.status, Task.task_type)
    )
    seen: set[tuple[str, str]] = set()
    for status, task_type, count in rows:
        tasks.add_metric([status, task_type], count)
        seen.add((status, task_type))
    types = {task_type for _, task_type in seen}
    for status in TaskStatus:  # a status with no task still shows, as 0
        for task_type in types:
            if (status, task_type) not in seen:
                tasks.add_metric([status, task_type], 0)

    pending = await session.scalar(
        select(func.count()).select_from(Task).where(Task.status == TaskStatus.PENDING)
    )
    depth = GaugeMetricFamily("darkroom_queue_depth", "Pending tasks: created or retried, not yet claimed.")
    depth.add_metric([], pending or 0)

    expired = await session.scalar(
        select(func.count())
        .select_from(Task)
        .where(Task.status == TaskStatus.PROCESSING, Task.lease_expires_at < datetime.now(UTC))
    )
    stale = GaugeMetricFamily(
        "darkroom_tasks_lease_expired", "Processing tasks whose worker stopped renewing the lease."
    )
    stale.add_metric([], expired or 0)

    sums = dict(
        (
            await session.execute(
                select(
                    CreditTransaction.transaction_type, func.coalesce(func.sum(CreditTransaction.amount), 0)
                )
                .where(CreditTransaction.transaction_type.in_(["reserve", "release"]))
                .group_by(CreditTransaction.transaction_type)
            )
        ).all()
    )
    captured = await session.scalar(
        select(func.coalesce(func.sum(TaskAttempt.cost), 0)).where(TaskAttempt.status == "completed")
    )
    credits = CounterMetricFamily(
        "darkroom_credits", "Credits moved through escrow since the start, by kind.", labels=["kind"]
    )
    credits.add_metric(["reserved"], -int(sums.get("reserve", 0)))
    credits.add_metric(["captured"], int(captured or 0))
    credits.add_metric(["released"], int(sums.get("release", 0)))
    return [tasks, depth, stale, credits]


def render(extra: list[Metric]) -> bytes:
    """This process's metrics plus the database snapshot, in the Prometheus text format."""
    snapshot = CollectorRegistry(auto_describe=True)
    snapshot.register(_Snapshot(extra))
    return generate_latest(REGISTRY) + generate_latest(snapshot)


router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(ctx: Context) -> Response:
    """Prometheus text format. No authentication: expose it on a private network only."""
    async with ctx.db.transaction(write=False) as session:
        snapshot = await database_metrics(session)
    return Response(render(snapshot), media_type=CONTENT_TYPE)
