"""``darkroom submit`` and ``darkroom tasks``: the API from a terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from darkroom.client.api import ApiError, Client, parse_param
from darkroom.storage.keys import EXTENSIONS

DEFAULT_SERVER = "http://127.0.0.1:3000"


def _server_options(fn: Any) -> Any:
    fn = click.option(
        "--password", envvar="DARKROOM_PASSWORD", help="Log in with this password (env DARKROOM_PASSWORD)."
    )(fn)
    fn = click.option("--email", envvar="DARKROOM_EMAIL", help="Log in as this user (env DARKROOM_EMAIL).")(
        fn
    )
    fn = click.option("--token", envvar="DARKROOM_TOKEN", help="An access token (env DARKROOM_TOKEN).")(fn)
    fn = click.option(
        "--server",
        envvar="DARKROOM_SERVER",
        default=DEFAULT_SERVER,
        show_default=True,
        help="The Darkroom server (env DARKROOM_SERVER).",
    )(fn)
    return fn


def _client(server: str, token: str | None, email: str | None, password: str | None) -> Client:
    client = Client(server)
    if token:
        client.use_token(token)
    elif email and password:
        client.login(email, password)
    elif email:
        client.login(email, click.prompt("Password", hide_input=True))
    else:
        raise click.UsageError("give --token (or DARKROOM_TOKEN), or --email and --password")
    return client


def _fail(exc: ApiError) -> click.ClickException:
    return click.ClickException(f"{exc.message} [{exc.code}]")


@click.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--type", "task_type", required=True, help="Task type, e.g. background_removal.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable).")
@_server_options
@click.option("--wait", is_flag=True, help="Follow the task with a progress bar until it finishes.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Save the results here (implies --wait).",
)
def submit(
    files: tuple[Path, ...],
    task_type: str,
    params: tuple[str, ...],
    server: str,
    token: str | None,
    email: str | None,
    password: str | None,
    wait: bool,
    out: Path | None,
) -> None:
    """Upload FILES as one task of type --type; with --wait, follow it and save the results."""
    try:
        parameters = dict(parse_param(p) for p in params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None
    try:
        with _client(server, token, email, password) as client:
            task = client.create_task(list(files), task_type, parameters)
            cost = task["cost"]
            click.echo(
                f"task {task['taskNo']} ({task['id']}) created: {task['status']}, "
                f"cost {cost} credit{'' if cost == 1 else 's'}"
            )
            if not (wait or out):
                return
            status = _follow(client, task["id"])
            final = client.task(task["id"])
            if status != "completed":
                detail = (
                    f": {final.get('errorMessage')} [{final.get('errorCode')}]" if status == "failed" else ""
                )
                raise click.ClickException(f"task {final['taskNo']} {status}{detail}")
            click.echo(f"task {final['taskNo']} completed")
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                for index, result in enumerate(final["results"], start=1):
                    ext = EXTENSIONS.get(result["contentType"], "bin")
                    target = out / f"{final['taskNo']}_{index}.{ext}"
                    client.download(result["downloadUrl"], target)
                    click.echo(f"saved {target}")
            else:
                for url in final["resultUrls"]:
                    click.echo(url)
    except ApiError as exc:
        raise _fail(exc) from None


def _follow(client: Client, task_id: str) -> str:
    with click.progressbar(length=100, label="progress", show_percent=True, show_eta=False) as bar:
        shown = 0

        def on_change(event: dict[str, Any]) -> None:
            nonlocal shown
            progress = int(event.get("progress") or 0)
            if progress > shown:
                bar.update(progress - shown)
                shown = progress

        return client.follow(task_id, on_change)


@click.command("tasks")
@_server_options
@click.option("--status", type=click.Choice(["pending", "processing", "completed", "failed", "canceled"]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def tasks(
    server: str,
    token: str | None,
    email: str | None,
    password: str | None,
    status: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List your tasks, newest first."""
    try:
        with _client(server, token, email, password) as client:
            page = client.tasks(limit=limit, offset=offset, status=status)
    except ApiError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(page, indent=2, ensure_ascii=False))
        return
    rows = page["data"]
    if not rows:
        click.echo("no tasks yet — submit a photo with: darkroom submit PHOTO --type background_removal")
        return
    for t in rows:
        line = (
            f"{t['taskNo']}  {t['status']:<10} {t['progress']:>3}%  {t['taskType']:<19} "
            f"{t['createdAt'][:19]}  {t['id']}"
        )
        if t["status"] == "failed":
            line += f"  [{t['errorCode']}] {t['errorMessage']}"
        click.echo(line)
    p = page["pagination"]
    click.echo(f"{p['offset'] + 1}–{p['offset'] + len(rows)} of {p['total']}")
