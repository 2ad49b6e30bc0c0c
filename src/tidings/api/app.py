"""The ASGI application: routers, error shape, body limits, and the in-process dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute

from tidings import __version__
from tidings.api import (
    routes_catalog,
    routes_events,
    routes_hooks,
    routes_keys,
    routes_portal,
    routes_subscriptions,
)
from tidings.api.errors import ApiError, install_error_handlers
from tidings.api.limits import BodySizeLimit
from tidings.api.schemas import ErrorResponse
from tidings.api.strict_input import StrictInput
from tidings.portal import install as install_portal
from tidings.service import Tidings
from tidings.supervision import Fatal

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query_parameters(request: Request) -> None:
    """A misspelt filter (``?typ=…``) is an error, not a silently unfiltered answer."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _query_names(route.dependant))
    if unknown:
        raise ApiError(
            422,
            "validation_error",
            f"unknown query parameter(s): {', '.join(unknown)}",
            [{"field": f"query.{name}", "message": "unknown parameter"} for name in unknown],
        )


def _gave_up(app: FastAPI, task: asyncio.Task[None]) -> None:
    """The dispatcher kept crashing: stop serving, so the process exits non-zero."""
    if not task.cancelled() and isinstance(task.exception(), Fatal):
        app.state.failed = True
        app.state.stop_serving()


def create_app(
    tidings: Tidings, *, run_dispatcher: bool = True, migrate: bool = True, portal: bool = True
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        if migrate:
            await tidings.wait_for_database(stop)
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
    # whoever runs the app (cli.serve) sets stop_serving to end the server
    install_error_handlers(app)
    for module in (routes_events, routes_subscriptions, routes_catalog, routes_hooks, routes_keys):
        app.include_router(module.router)
    if portal:
        app.include_router(routes_portal.router)

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
        body, content_type = await tidings.metrics.render(
            tidings.store.queue, tidings.store.reports
        )
        return Response(body, media_type=content_type)

    if portal:
        install_portal(app)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/portal/" if portal else "/docs")

    app.add_middleware(StrictInput)  # inside the size limit: it reads whole bodies
    app.add_middleware(BodySizeLimit, max_bytes=tidings.settings.max_request_bytes)
    return app
