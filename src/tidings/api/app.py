"""The ASGI application: routers, error shape, body limit, and the in-process dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from tidings import __version__
from tidings.api import routes_catalog, routes_events, routes_subscriptions
from tidings.api.errors import install_error_handlers
from tidings.api.limits import BodySizeLimit
from tidings.api.schemas import ErrorResponse
from tidings.service import Tidings

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429)
}


def create_app(tidings: Tidings, *, run_dispatcher: bool = True, migrate: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await tidings.store.migrate()
        stop = asyncio.Event()
        worker = asyncio.create_task(tidings.run_dispatcher(stop)) if run_dispatcher else None
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            await tidings.close()

    app = FastAPI(
        title="tidings",
        version=__version__,
        description="Durable, signed webhook and event delivery.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.tidings = tidings
    install_error_handlers(app)
    for module in (routes_events, routes_subscriptions, routes_catalog):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit, max_bytes=tidings.settings.max_request_bytes)
    return app
