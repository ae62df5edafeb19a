"""The ``darkroom`` command: serve, migrate, users, credits, doctor; submit and tasks (API client)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from darkroom import __version__
from darkroom.config import Settings

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic's ValidationError, made readable
        raise click.ClickException(f"configuration error: {exc}") from None


def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run fn(ctx) against a migrated database, without workers."""
    from darkroom import migrate
    from darkroom.app import build_context

    settings.data_dir.mkdir(parents=True, exist_ok=True)  # as serve and migrate: SQLite makes no folder

    async def main() -> T:
        if settings.auto_migrate:
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        ctx = build_context(settings)
        try:
            return await fn(ctx)
        finally:
            await ctx.registry.aclose()
            await ctx.db.dispose()

    return asyncio.run(main())


@click.group()
@click.version_option(__version__, prog_name="darkroom")
def main() -> None:
    """Darkroom: a self-hosted AI image service."""


@main.command()
@click.option("--host", help="Interface to listen on (default 127.0.0.1, env DARKROOM_HOST).")
@click.option("--port", type=int, help="Port (default 3000, env PORT).")
@click.option("--workers/--no-workers", "run_workers", default=None, help="Run task workers in this process.")
@click.option(
    "--concurrency", "worker_concurrency", type=int, help="Tasks run at once (env DARKROOM_WORKERS)."
)
def serve(
    host: str | None, port: int | None, run_workers: bool | None, worker_concurrency: int | None
) -> None:
    """Start the API and (by default) the task workers in one process. With DARKROOM_BROKER_URL set,
    only the API: tasks go through the broker to `darkroom worker` processes."""
    import uvicorn

    from darkroom.app import create_app
    from darkroom.heap import freeze_startup_objects
    from darkroom.logs import configure_logging

    settings = _settings(host=host, port=port, run_workers=run_workers, worker_concurrency=worker_concurrency)
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"Darkroom {__version__} on http://{settings.host}:{settings.port}  (data: {settings.data_dir})"
    )
    click.echo(f"API docs: http://{settings.host}:{settings.port}/docs")
    app = create_app(settings)
    freeze_startup_objects()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Tasks run at once by this process (env DARKROOM_WORKERS).",
)
def worker(concurrency: int | None) -> None:
    """Run tasks sent through DARKROOM_BROKER_URL (Dramatiq on Redis or RabbitMQ); no HTTP.

    Start as many as you like, on any machine that reaches the database, the broker and the storage.
    """
    from darkroom.heap import freeze_startup_objects
    from darkroom.logs import configure_logging
    from darkroom.queue.worker import run_worker

    settings = _settings(worker_concurrency=concurrency)
    if not settings.broker_url:
        raise click.ClickException("set DARKROOM_BROKER_URL (redis://… or amqp://…) to run workers")
    configure_logging(settings.log_level)
    freeze_startup_objects()
    run_worker(settings, settings.worker_concurrency)


@main.command("migrate")
@click.option("--revision", default="head", show_default=True)
def migrate_cmd(revision: str) -> None:
    """Apply database migrations."""
    from darkroom import migrate

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def users() -> None:
    """Manage accounts."""


@users.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--username")
@click.option(
    "--credits", "credits_", type=click.IntRange(min=0), help="Initial credits (default: sign-up grant)."
)
@click.option("--admin", is_flag=True)
def users_create(email: str, password: str, username: str | None, credits_: int | None, admin: bool) -> None:
    """Create an account."""
    from darkroom.auth import service
    from darkroom.auth.schemas import RegisterRequest
    from darkroom.errors import DarkroomError

    settings = _settings()
    try:
        RegisterRequest(email=email, password=password, username=username)
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    grant = settings.signup_credits if credits_ is None else credits_

    async def run(ctx: Any) -> tuple[str, str]:
        async with ctx.db.transaction() as session:
            user = await service.create_user(
                session,
                email=email,
                password=password,
                username=username,
                credits_grant=grant,
                is_admin=admin,
                grant_description="Initial credits (darkroom users create)",
            )
            return user.id, user.email

    try:
        user_id, stored_email = _with_db(settings, run)
    except DarkroomError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created {stored_email} (id {user_id}) with {grant} credits{' as admin' if admin else ''}")


@main.group()
def credits() -> None:
    """Manage credit balances."""


@credits.command("grant")
@click.argument("email")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Shown in the user's ledger.")
def credits_grant(email: str, amount: int, reason: str) -> None:
    """Add AMOUNT credits to a user (a negative AMOUNT removes them, never below zero)."""
    from darkroom.auth import service as auth
    from darkroom.credits import service
    from darkroom.errors import DarkroomError

    if amount == 0:
        raise click.ClickException("AMOUNT must not be zero")

    async def run(ctx: Any) -> int:
        async with ctx.db.transaction() as session:
            user = await auth.get_by_email(session, email)
            if user is None:
                raise click.ClickException(f"no user with e-mail {email}")
            return await service.grant(
                session, user.id, amount, reason, kind="grant" if amount > 0 else "adjust"
            )

    try:
        balance = _with_db(_settings(), run)
    except DarkroomError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{email}: {amount:+d} credits, balance now {balance}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """Check invariants: balances equal ledger sums; no task stuck past its lease."""
    from sqlalchemy import select

    from darkroom.credits.service import find_mismatches
    from darkroom.models import Task, TaskStatus, User

    async def run(ctx: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        async with ctx.db.transaction(write=False) as session:
            mismatches = await find_mismatches(session)
            emails = dict((await session.execute(select(User.id, User.email))).all())
            stuck = list(
                await session.scalars(
                    select(Task).where(Task.status == TaskStatus.PROCESSING, Task.lease_expires_at < now)
                )
            )
        return {
            "balanceMismatches": [
                {
                    "userId": m.user_id,
                    "email": emails.get(m.user_id),
                    "balance": m.balance,
                    "ledgerSum": m.ledger_sum,
                }
                for m in mismatches
            ],
            "stuckTasks": [
                {
                    "id": t.id,
                    "taskNo": t.task_no,
                    "leaseExpiredAt": t.lease_expires_at.isoformat() if t.lease_expires_at else None,
                    "claimCount": t.claim_count,
                }
                for t in stuck
            ],
        }

    report = _with_db(_settings(), run)
    problems = len(report["balanceMismatches"]) + len(report["stuckTasks"])
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for m in report["balanceMismatches"]:
            click.echo(f"BALANCE  {m['email']}: balance {m['balance']} != ledger sum {m['ledgerSum']}")
        for t in report["stuckTasks"]:
            click.echo(f"STUCK    task {t['taskNo']} ({t['id']}): lease expired at {t['leaseExpiredAt']}")
        click.echo(
            "all good: every balance equals its ledger, no task is stuck"
            if not problems
            else f"{problems} problem(s) found"
        )
    sys.exit(1 if problems else 0)


def _add_client_commands() -> None:
    from darkroom.client.commands import submit, tasks

    main.add_command(submit)
    main.add_command(tasks)


_add_client_commands()
