"""The ``tidings`` command: serve, worker, dev, migrate, keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from pydantic import ValidationError

from tidings import collector
from tidings.config import Settings
from tidings.devtools import Options, Target, run_listen, run_trigger
from tidings.domain.signatures import SignatureScheme
from tidings.logs import configure_logging
from tidings.service import SCOPES, Tidings
from tidings.storage import ApiKeyInfo, Revocation, Revoked
from tidings.supervision import EXIT_FATAL, EXIT_USAGE, Fatal

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(help="tidings: durable, signed webhook delivery.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """tidings: durable, signed webhook delivery."""
    try:
        settings = Settings()
    except ValidationError as exc:
        typer.echo(f"invalid configuration:\n{exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    configure_logging(settings.json_logs, settings.log_level)


keys = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys, name="keys")

DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(help="TCP port.")]


Workers = Annotated[
    int,
    typer.Option(
        min=0,
        help="Dispatcher processes to run beside the API and keep running (about one per "
        "core); all of them share the work through the database, and the API's own "
        "process, left to the API, dispatches nothing.",
    ),
]


def _serve(settings: Settings, host: str, port: int, workers: int = 0) -> None:
    from tidings.app import create_app

    tidings = Tidings.from_settings(settings)
    app = create_app(tidings, run_dispatcher=dispatches_itself(settings, workers))
    access_log = settings.development if settings.access_log is None else settings.access_log
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=access_log)
    server = uvicorn.Server(config)
    app.state.stop_serving = lambda: setattr(server, "should_exit", True)
    app.state.started = collector.settle
    with _workers_beside(workers, server, app):
        server.run()
    if app.state.failed:
        raise typer.Exit(EXIT_FATAL)


def dispatches_itself(settings: Settings, workers: int) -> bool:
    """Whether ``serve``'s own process runs a dispatcher: not when ``--workers`` run
    beside it. One Python process works on one core; at a thousand emits a second the
    API's work alone fills most of it (``bench/benchmark.py``), and a dispatcher beside it
    in the same process made every delivery wait for both."""
    return settings.dispatcher_enabled and workers == 0


@contextlib.contextmanager
def _workers_beside(count: int, server: uvicorn.Server, app: FastAPI) -> Iterator[None]:
    """``count`` worker processes beside ``serve``, stopped (each finishing what it has in
    flight) before ``serve`` exits. A workers' group that ends by itself stops ``serve``.

    A stop signal reaches the workers at once, alongside uvicorn's own shutdown, so a
    worker that got the signal itself (Ctrl+C, systemd) is not taken for a crash and
    restarted; a second signal kills them. uvicorn ends a signalled shutdown by raising
    the signal again under the handler it found when it started: that handler, here,
    notes it (and stops the server, for a signal that comes before uvicorn listens), so
    the workers are waited for first, and the signal is raised again after."""
    if not count:
        yield
        return
    from tidings.processes import ProcessGroup, worker_argv

    group = ProcessGroup(worker_argv(), count)

    def group_failed() -> None:
        app.state.failed = True
        server.should_exit = True

    wait = group.run_beside(on_failure=group_failed)
    uvicorn_exit = server.handle_exit

    def handle_exit(signum: int, frame: FrameType | None) -> None:
        group.stop_children()
        uvicorn_exit(signum, frame)

    setattr(server, "handle_exit", handle_exit)  # noqa: B010 - uvicorn installs self.handle_exit
    noted: list[int] = []

    def note(signum: int, _frame: object) -> None:
        noted.append(signum)
        server.should_exit = True
        if len(noted) > 1 or not group.stopping:  # not uvicorn's raising it again
            group.stop_children()

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        if not group.stopping:
            group.stop_children()
        wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in noted[:1]:
            signal.raise_signal(signum)


@app.command()
def serve(host: Host = "127.0.0.1", port: Port = 8000, workers: Workers = 0) -> None:
    """Migrate if needed, then serve the API with a dispatcher in the same process, or
    with ``--workers`` dispatcher processes beside it instead."""
    _serve(Settings(), host, port, workers)


Processes = Annotated[
    int,
    typer.Option(
        min=1,
        help="Dispatcher processes to run and keep running (about one per core); "
        "they share the work through the database.",
    ),
]


@app.command()
def worker(processes: Processes = 1) -> None:
    """Run a dispatcher only (scale out by running several, here or on other machines)."""
    from tidings.processes import ProcessGroup, follow_parent, worker_argv

    follow_parent()
    if processes > 1:
        raise typer.Exit(ProcessGroup(worker_argv(), processes).run())
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_worker(Settings()))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed (it comes with uvicorn[standard]); asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _worker(settings: Settings) -> None:
    tidings = Tidings.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await tidings.wait_for_database(stop)
        collector.settle()
        typer.echo("tidings worker: delivering (SIGTERM to stop)")
        await tidings.run_dispatcher(stop)
    except Fatal as exc:
        typer.echo(f"tidings worker: {exc} kept crashing; exiting", err=True)
        raise typer.Exit(EXIT_FATAL) from exc
    finally:
        await tidings.close()


@app.command()
def migrate() -> None:
    """Apply database migrations."""

    async def run() -> None:
        tidings = Tidings.from_settings(Settings())
        try:
            await tidings.prepare_database()
        finally:
            await tidings.close()

    asyncio.run(run())
    typer.echo("database is up to date")


@app.command()
def dev(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Serve in development mode on SQLite; creates a dev tenant and admin key on first run."""
    os.environ.setdefault("TIDINGS_ENV", "development")
    settings = Settings()
    configure_logging(settings.json_logs, settings.log_level)
    key = asyncio.run(_dev_key(settings))
    base = f"http://{host}:{port}"
    typer.echo(
        f"\ntidings dev\n"
        f"  database  {settings.resolved_database_url}\n"
        f"  API       {base}/api/v1\n"
        f"  OpenAPI   {base}/openapi.json   docs: {base}/docs\n"
        f"  portal    {base}/portal/   (sign in with this key)\n"
        f"  tenant    {DEV_TENANT}\n"
        f"  admin key {key}\n"
        f"  try:      curl -H 'X-Api-Key: {key}' {base}/api/v1/event-types\n"
    )
    _serve(settings, host, port)


async def _dev_key(settings: Settings) -> str:
    """The dev admin key, kept in the data directory so later runs print the same one."""
    path = Path(settings.data_dir) / DEV_KEY_FILE
    tidings = Tidings.from_settings(settings)
    try:
        await tidings.store.migrate()
        if path.is_file():
            saved = path.read_text().strip()
            if await tidings.authenticate(saved) is not None:
                return saved
        _, plaintext = await tidings.create_api_key(DEV_TENANT, ["admin"])
    finally:
        await tidings.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(plaintext + "\n")
    return plaintext


Server = Annotated[str, typer.Option(envvar="TIDINGS_SERVER", help="tidings server URL.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="TIDINGS_API_KEY", help="API key (default: the dev key)."),
]


def _target(server: str, api_key: str | None) -> Target:
    key = api_key
    if key is None:
        path = Settings().data_dir / DEV_KEY_FILE
        if not path.is_file():
            raise typer.BadParameter("pass --api-key (or run `tidings dev` to create a dev key)")
        key = path.read_text().strip()
    return Target(server.rstrip("/"), key)


@app.command()
def listen(
    forward_to: Annotated[str, typer.Option(help="Your app's webhook URL.")],
    events: Annotated[list[str], typer.Option(help="Event types or patterns.")] = ["*"],  # noqa: B006
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKeyOption = None,
    signature_scheme: Annotated[
        SignatureScheme, typer.Option(help="What your app checks (see the API docs).")
    ] = SignatureScheme.HMAC,
    header: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable 'Name: value': a static header on every delivery."),
    ] = None,
    retry_policy: Annotated[
        str | None,
        typer.Option(help='JSON, e.g. \'{"delays": [5, 30], "retryOn": ["5xx"]}\'.'),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            help='JSON: only events that pass, e.g. \'{"payload.amount": {"$gte": 1000}}\'.'
        ),
    ] = None,
    transformation: Annotated[
        Path | None,
        typer.Option(
            help="A JavaScript file defining function handler(webhook), run on every "
            "delivery before it is signed.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
) -> None:
    """Forward a tidings server's deliveries to a local app, printing each one and whether
    its signature verifies with the key printed for your app."""
    options = Options(
        scheme=signature_scheme,
        headers=_static_headers(header or []),
        retry_policy=_json_object(retry_policy, "--retry-policy"),
        filter=_json_object(filter, "--filter"),
        transformation=transformation.read_text() if transformation is not None else None,
    )
    run_listen(_target(server, api_key), forward_to, events, options)


def _static_headers(given: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in given:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            raise typer.BadParameter(f"{item!r} is not 'Name: value'", param_hint="--header")
        headers[name.strip()] = value.strip()
    return headers


def _json_object(given: str | None, option: str) -> dict[str, object] | None:
    """An option given as a JSON object (the server checks what is in it)."""
    if given is None:
        return None
    try:
        value = json.loads(given)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from exc
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    return value


@app.command()
def trigger(
    event_type: Annotated[str, typer.Argument(help="e.g. client.created")],
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKeyOption = None,
) -> None:
    """Emit an event of this type with the catalog's sample payload."""
    envelope = run_trigger(_target(server, api_key), event_type)
    typer.echo(f"emitted {envelope['type']} {envelope['id']}")


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
    scope: Annotated[list[str], typer.Option(help=f"Repeatable: {', '.join(sorted(SCOPES))}.")],
) -> None:
    """Create a tenant if needed and an API key; the plaintext key is the last line."""
    unknown = sorted(set(scope) - SCOPES)
    if unknown:
        raise typer.BadParameter(f"unknown scope(s) {unknown}; use {sorted(SCOPES)}")

    async def run() -> str:
        tidings = Tidings.from_settings(Settings())
        try:
            await tidings.store.migrate()
            key, plaintext = await tidings.create_api_key(tenant, scope)
            typer.echo(f"tenant {tenant} ({key.tenant_id}), key {key.id}, scopes {sorted(scope)}")
            return plaintext
        finally:
            await tidings.close()

    typer.echo(asyncio.run(run()))


@keys.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="Tenant name.")]) -> None:
    """The tenant's keys, revoked ones too: id, prefix, scopes, created, revoked (never the
    key or its hash)."""

    async def run() -> list[ApiKeyInfo] | None:
        tidings = Tidings.from_settings(Settings())
        try:
            await tidings.store.migrate()
            found = await tidings.store.keys.find_tenant(tenant)
            return await tidings.store.keys.list_api_keys(found.id) if found else None
        finally:
            await tidings.close()

    listed = asyncio.run(run())
    if listed is None:
        raise typer.BadParameter(f"no tenant named {tenant!r}", param_hint="--tenant")
    rows = [("ID", "PREFIX", "SCOPES", "CREATED", "REVOKED")]
    rows += [
        (
            k.id,
            k.prefix,
            ",".join(sorted(k.scopes)),
            _utc(k.created_ms),
            _utc(k.revoked_ms) if k.revoked_ms is not None else "-",
        )
        for k in listed
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


@keys.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")]) -> None:
    """Revoke a key of any tenant and end the portal sessions opened with it. Running
    servers stop accepting it within 5 seconds (their key cache)."""

    async def run() -> Revoked:
        tidings = Tidings.from_settings(Settings())
        try:
            await tidings.store.migrate()
            return await tidings.revoke_api_key(key_id, keep_last_admin=False)
        finally:
            await tidings.close()

    revoked = asyncio.run(run())
    if revoked.key is None:
        raise typer.BadParameter(f"no key with id {key_id!r}", param_hint="KEY_ID")
    if revoked.outcome is Revocation.ALREADY_REVOKED:
        typer.echo(f"key {key_id} was already revoked")
        return
    typer.echo(
        f"revoked key {key_id} ({revoked.key.prefix}…, tenant {revoked.key.tenant_id}); "
        f"ended {revoked.sessions_ended} portal session(s)"
    )


@app.command("portal-link")
def portal_link(
    tenant: Annotated[str, typer.Option(help="The tenant whose customer gets the link.")],
    hours: Annotated[float, typer.Option(help="How long the link works.")] = 24.0,
    manage: Annotated[
        bool, typer.Option(help="Let the holder create, edit, test and delete subscriptions.")
    ] = False,
    base_url: Annotated[
        str, typer.Option(help="Where the portal is served.")
    ] = "http://127.0.0.1:8000",
) -> None:
    """A signed, expiring portal link showing one tenant's subscriptions and logs; the URL
    is the last line."""
    from tidings.web.sessions import PortalSigner

    async def run() -> str:
        tidings = Tidings.from_settings(Settings())
        try:
            await tidings.store.migrate()
            found = await tidings.store.keys.find_tenant(tenant)
        finally:
            await tidings.close()
        if found is None:
            raise typer.BadParameter(f"no tenant named {tenant!r}", param_hint="--tenant")
        try:
            link = PortalSigner(tidings.secretbox).consumer_link(found.id, hours * 3600, manage)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--hours") from exc
        return f"{base_url.rstrip('/')}/portal/c/{link.token}"

    typer.echo(asyncio.run(run()))


if __name__ == "__main__":
    app()
