"""Apps: host applications that plug into a tidings server.

An app is a Python package that declares an :class:`App` under the entry-point group
``tidings.apps``, in its ``pyproject.toml``::

    [project.entry-points."tidings.apps"]
    crm = "tidings_crm:app"

When tidings starts, every installed app is loaded unless ``TIDINGS_APPS`` names the ones
to load (comma-separated entry-point names; empty for none). An app gives:

* ``event_types``: added to the catalog, so the API accepts and documents them;
* ``routers``: FastAPI routers mounted on the server (authenticate with
  :func:`tidings.require`, answer errors with :class:`tidings.ApiError`);
* ``on_startup``: awaited once the database is migrated, before the server takes
  requests (e.g. to create the app's own tables).

To write rows and emit events in one transaction (the transactional outbox), an app calls
:meth:`tidings.Tidings.transaction`. The reference CRM (``tidings_crm``) is a complete
example that uses nothing but this module and the names in :mod:`tidings`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from tidings.domain.catalog import EventType

if TYPE_CHECKING:
    from tidings.service import Tidings

ENTRY_POINT_GROUP = "tidings.apps"


@dataclass(frozen=True)
class App:
    """What one app adds to tidings."""

    name: str
    event_types: Sequence[EventType] = ()
    routers: Sequence[Any] = ()
    """``fastapi.APIRouter`` objects (typed loosely: the service layer knows no FastAPI)."""
    on_startup: Callable[[Tidings], Awaitable[None]] | None = None


class AppNotFound(LookupError):
    """``TIDINGS_APPS`` names an app that is not installed, or an app fails to load."""


def _load(entry: EntryPoint) -> App:
    try:
        app = entry.load()
    except Exception as exc:
        raise AppNotFound(f"app {entry.name!r} ({entry.value}) fails to load: {exc}") from exc
    if not isinstance(app, App):
        raise AppNotFound(f"app {entry.name!r} ({entry.value}) is a {type(app).__name__}, not App")
    return app


def installed_apps() -> dict[str, App]:
    """Every app declared under ``tidings.apps``, by entry-point name."""
    return {entry.name: _load(entry) for entry in entry_points(group=ENTRY_POINT_GROUP)}


def load_apps(selection: str | None) -> list[App]:
    """The apps ``TIDINGS_APPS`` chooses: None for every installed one, else the named
    ones in the order named, each once ("" for none). Only the chosen ones are imported."""
    entries = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    names = chosen_names(selection, list(entries))
    missing = [name for name in names if name not in entries]
    if missing:
        known = ", ".join(sorted(entries)) or "none"
        raise AppNotFound(f"TIDINGS_APPS names {', '.join(missing)}; installed apps: {known}")
    chosen: list[App] = []
    for name in names:
        app = _load(entries[name])
        if app not in chosen:  # one App under two names is still one app
            chosen.append(app)
    return chosen


def chosen_names(selection: str | None, installed: list[str] | None = None) -> list[str]:
    """The app names ``TIDINGS_APPS`` gives, each once, in order; None means every
    installed one (``installed``, else read from the entry points, none imported)."""
    if selection is None:
        if installed is None:
            installed = [entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)]
        return installed
    return list(dict.fromkeys(name.strip() for name in selection.split(",") if name.strip()))
