"""Apps plug in through the ``tidings.apps`` entry points; ``TIDINGS_APPS`` chooses."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import tidings_crm
from tidings.app import create_app
from tidings.apps import App, AppNotFound, installed_apps, load_apps
from tidings.config import Settings
from tidings.service import Tidings


def test_the_reference_crm_is_an_installed_app() -> None:
    assert installed_apps()["crm"] is tidings_crm.app


@pytest.mark.parametrize(
    ("selection", "names"),
    [(None, ["crm"]), ("", []), ("  ", []), ("crm", ["crm"]), (" crm ,", ["crm"])],
)
def test_tidings_apps_chooses_among_installed_apps(selection: str | None, names: list[str]) -> None:
    assert [app.name for app in load_apps(selection)] == names


def test_an_app_that_is_not_installed_is_named_in_the_error() -> None:
    with pytest.raises(AppNotFound, match=r"billing.*installed apps: crm"):
        load_apps("crm,billing")


def _paths(tmp_path: Path, apps: str | None) -> tuple[set[str], set[str]]:
    settings = Settings(data_dir=tmp_path, apps=apps, encryption_key=Fernet.generate_key().decode())
    service = Tidings.from_settings(settings)
    return set(create_app(service).openapi()["paths"]), {t.name for t in service.catalog}


def test_an_app_adds_its_routes_and_event_types(tmp_path: Path) -> None:
    with_crm, crm_types = _paths(tmp_path, None)
    alone, own_types = _paths(tmp_path, "")
    assert "/api/v1/clients" in with_crm and "/api/v1/clients" not in alone
    assert "/api/v1/events" in alone and alone < with_crm
    assert own_types == {"subscription.disabled", "endpoint.verify"}
    assert crm_types - own_types == {t.name for t in tidings_crm.app.event_types}


async def test_on_startup_runs_after_migration_with_the_service(tmp_path: Path) -> None:
    started: list[Tidings] = []

    async def on_startup(service: Tidings) -> None:
        started.append(service)

    settings = Settings(data_dir=tmp_path, encryption_key=Fernet.generate_key().decode())
    service = Tidings.from_settings(settings)
    service.apps = (App("probe", on_startup=on_startup),)
    app = create_app(service, run_dispatcher=False)
    async with app.router.lifespan_context(app):
        assert started == [service]
        assert await service.readiness() == {}


async def test_the_processs_started_hook_runs_once_every_app_has_started(tmp_path: Path) -> None:
    """``tidings serve`` sets it to settle the garbage collector (``tidings.collector``)."""
    calls: list[str] = []

    async def on_startup(service: Tidings) -> None:
        calls.append("app")

    settings = Settings(data_dir=tmp_path, encryption_key=Fernet.generate_key().decode())
    service = Tidings.from_settings(settings)
    service.apps = (App("probe", on_startup=on_startup),)
    app = create_app(service, run_dispatcher=False)
    app.state.started = lambda: calls.append("process")
    async with app.router.lifespan_context(app):
        assert calls == ["app", "process"]
