"""Shared fixtures: real databases, a real receiver on 127.0.0.1, the app over ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.abc import AbstractResolver
from cryptography.fernet import Fernet

from tests.support import postgres
from tests.support.processes import create_key, serving, tidings_env
from tests.support.receiver import Receiver
from tidings.app import create_app
from tidings.config import Settings
from tidings.service import Tidings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs more than Python: real processes, PostgreSQL, a browser
    (``make test-fast`` leaves those out)."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)
        if item.path.name == "test_portal_browser.py":
            item.add_marker(pytest.mark.browser)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values():
            item.add_marker(pytest.mark.postgres)


FAST_RETRIES: dict[str, Any] = {
    "retry_base_delay": 0.05,
    "retry_max_delay": 0.2,
    "dispatcher_poll_interval": 0.05,
    "delivery_timeout": 3.0,
    "api_rate_limit": 0,  # tests that poll hard are not about the limit; its own test sets it
}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if not postgres.available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is required in CI (apt-get install postgresql)")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    with postgres.cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that touches the database runs on both connectors."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidings.db'}"
    server: str = request.getfixturevalue("postgres_server")
    return postgres.create_database(server)


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    key = Fernet.generate_key().decode()

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": tmp_path / "data",
            "env": "development",
            "encryption_key": key,
            **FAST_RETRIES,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as rx:
        yield rx


class Api:
    """An httpx client on the ASGI app, plus the service behind it for setup."""

    def __init__(self, client: httpx.AsyncClient, tidings: Tidings) -> None:
        self.client = client
        self.tidings = tidings

    def new_client(self) -> httpx.AsyncClient:
        """Another client on the same app, with its own cookies (a second browser)."""
        return httpx.AsyncClient(transport=self.client._transport, base_url=self.client.base_url)

    async def key(self, tenant: str = "acme", *scopes: str) -> dict[str, str]:
        _, plaintext = await self.tidings.create_api_key(tenant, list(scopes) or ["admin"])
        return {"X-Api-Key": plaintext}


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings,
    dispatcher: bool = True,
    resolver_factory: Callable[[], AbstractResolver] | None = None,
) -> AsyncIterator[Api]:
    tidings = Tidings.from_settings(settings)
    if resolver_factory is not None:
        tidings.resolver_factory = resolver_factory
    app = create_app(tidings, run_dispatcher=dispatcher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings") as client:
            yield Api(client, tidings)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


@pytest.fixture
def start_api(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """For tests that need non-default settings: ``async with start_api(**overrides)``."""

    def start(
        dispatcher: bool = True,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        **overrides: Any,
    ) -> contextlib.AbstractAsyncContextManager[Api]:
        return running_api(make_settings(**overrides), dispatcher, resolver_factory)

    return start


@pytest.fixture
def server_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of ``server``: CLI commands run in it share the server's database."""
    return tidings_env(tmp_path / "data", TIDINGS_DATABASE_URL=database_url)


@pytest.fixture
async def server(tmp_path: Path, server_env: dict[str, str]) -> AsyncIterator[tuple[str, str]]:
    """The real ``tidings serve`` on a free port: yields (base URL, admin key)."""
    key = create_key(server_env)
    async with serving(server_env, tmp_path) as (base, process):
        yield base, key
    assert "Application shutdown complete" in process.log.read_text()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.02
) -> None:
    """Poll an async condition that has no event to await (e.g. a database row)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the condition lives in a database
            await asyncio.sleep(interval)
