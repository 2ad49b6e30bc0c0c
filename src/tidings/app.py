"""The composition root: one ASGI application from the layers that know nothing of each
other — the HTTP API, the portal, the installed apps (``tidings.apps``) — with the shared
error shape, input limits, health endpoints and the in-process dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse, RedirectResponse

from tidings import __version__
from tidings.api import (
    routes_catalog,
    routes_events,
    routes_filters,
    routes_hooks,
    routes_keys,
    routes_portal,
    routes_subscriptions,
    routes_transformations,
)
from tidings.api.fast_emit import FastEmit
from tidings.api.schemas import ErrorResponse
from tidings.portal import install as install_portal
from tidings.service import Tidings
from tidings.supervision import Fatal
from tidings.web.errors import install_error_handlers
from tidings.web.limits import BodySizeLimit
from tidings.web.queries import reject_unknown_query_parameters
from tidings.web.strict_input import StrictInput

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


def _gave_up(app: FastAPI, task: asyncio.Task[None]) -> None:
    """The dispatcher kept crashing: stop serving, so the process exits non-zero."""
    if not task.cancelled() and isinstance(task.exception(), Fatal):
        app.state.failed = True
        app.state.stop_serving()


def create_app(
    tidings: Tidings,
    *,
    run_dispatcher: bool = True,
    migrate: bool = True,
    portal: bool = True,
    fast_emit: bool = True,
) -> FastAPI:
    """The tidings server as one ASGI app over ``tidings``: the API, the portal (unless
    ``portal=False``), every app in ``tidings.apps``, and, unless ``run_dispatcher=False``,
    a dispatcher in the same process. Starting it waits for the database and migrates
    (unless ``migrate=False``), then runs each app's ``on_startup``. ``fast_emit=False``
    leaves every emit to its FastAPI route (the fast path's tests and benchmark compare)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        if migrate:
            await tidings.wait_for_database(stop)
        for installed in tidings.apps:
            if installed.on_startup is not None:
                await installed.on_startup(tidings)
        app.state.started()
        worker = None
        if run_dispatcher:
            worker = asyncio.create_task(tidings.run_dispatcher(stop))
            worker.add_done_callback(lambda task: _gave_up(app, task))
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                with contextlib.suppress(Fatal):
                    await worker
            await tidings.close()

    app = FastAPI(
        dependencies=[Depends(reject_unknown_query_parameters)],
        title="tidings",
        version=__version__,
        description="Durable, signed webhook and event delivery.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.tidings = tidings
    app.state.failed = False
    app.state.stop_serving = lambda: None
    app.state.started = lambda: None
    # whoever runs the app (cli.serve) sets stop_serving to end the server, and started
    # for what its process does once the app has started (cli: settle the collector)
    install_error_handlers(app)
    for module in (
        routes_events,
        routes_subscriptions,
        routes_transformations,
        routes_filters,
        routes_catalog,
        routes_hooks,
        routes_keys,
    ):
        app.include_router(module.router)
    if portal:
        app.include_router(routes_portal.router)
    for installed in tidings.apps:
        for router in installed.routers:
            app.include_router(router)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz() -> Response:
        """Readiness: the database answers, and the dispatcher (if this process runs one)
        is delivering."""
        problems = await tidings.readiness()
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = await tidings.metrics.render(tidings.store)
        return Response(body, media_type=content_type)

    if portal:
        install_portal(app)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/portal/" if portal else "/docs")

    if fast_emit:  # inside the input checks: it answers only what passed them
        app.add_middleware(FastEmit, tidings=tidings)
    app.add_middleware(StrictInput)  # inside the size limit: it reads whole bodies
    app.add_middleware(BodySizeLimit, max_bytes=tidings.settings.max_request_bytes)
    if tidings.tracing is not None:  # outermost: a 413 or a 400 is a traced request too
        app.add_middleware(tidings.tracing.middleware_class, tracing=tidings.tracing)
    return app
