"""The three receiver adapters (Flask, Starlette, Django) behind one small interface, so
one table of tests holds them to the same answers. Each ``Adapter`` carries what differs
between them: the signed body its tests send as not an envelope, how an unsigned POST is
sent, the dedup store its duplicate test uses, and Django's own ``Allow`` header."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import django
import flask
from django.conf import settings
from django.test import Client as DjangoClient
from django.test import override_settings
from django.urls import path
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.unit.test_receiver_support import SECRET, InlineExecutor
from tidings.receiver import DedupStore, Event, MemoryDedupStore, SQLiteDedupStore
from tidings.receiver.django import webhook_view as django_view
from tidings.receiver.flask import webhook_blueprint
from tidings.receiver.starlette import webhook_route

PATH = "/webhooks/tidings"
JSON = "application/json"
Handler = Callable[[Event], object]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tidings-receiver-tests",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
    )
    django.setup()


class _Response(Protocol):
    """What Flask's, Starlette's (httpx) and Django's test responses have in common."""

    status_code: int

    @property
    def headers(self) -> Any: ...


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Site:
    """One adapter serving ``PATH`` in its framework's test client."""

    post: Callable[[bytes, Mapping[str, str]], Answer]
    get: Callable[[], Answer]


Secrets = str | Sequence[str]
Serve = Callable[[Handler, DedupStore, bool, Secrets], AbstractContextManager[Site]]
"""``serve(handler, dedup, inline, secrets)``: inline runs the handler before the answer
returns; ``secrets`` are what the adapter verifies with (secrets and public keys)."""


@dataclass(frozen=True)
class Adapter:
    """An adapter and how its tests differ; the defaults are what most adapters do."""

    name: str
    serve: Serve
    not_an_envelope: bytes
    """A signed body that must be answered 400."""
    hands_over_on_a_thread: bool
    """Whether the handler runs on an executor's thread (not in the request)."""
    unsigned: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON})
    """The headers of a POST without a signature."""
    dedup: Callable[[Path], DedupStore] = lambda _: MemoryDedupStore()
    """The store the duplicate test remembers deliveries in."""
    allow: str | None = None
    """The ``Allow`` header the adapter writes itself on a 405 (None: left to the framework)."""

    def site(
        self,
        handler: Handler,
        dedup: DedupStore | None = None,
        *,
        inline: bool = True,
        secrets: Secrets = SECRET,
    ) -> AbstractContextManager[Site]:
        return self.serve(handler, dedup or MemoryDedupStore(), inline, secrets)


def _answer(response: _Response, body: bytes) -> Answer:
    return Answer(response.status_code, body, dict(response.headers))


def _executor(inline: bool) -> InlineExecutor | None:
    return InlineExecutor() if inline else None


@contextmanager
def _flask(handler: Handler, dedup: DedupStore, inline: bool, secrets: Secrets) -> Iterator[Site]:
    app = flask.Flask(__name__)
    blueprint = webhook_blueprint(
        secrets, handler, rule=PATH, dedup=dedup, executor=_executor(inline)
    )
    app.register_blueprint(blueprint)
    client = app.test_client()

    def post(body: bytes, headers: Mapping[str, str]) -> Answer:
        response = client.post(PATH, data=body, headers=dict(headers))
        return _answer(response, response.get_data())

    def get() -> Answer:
        response = client.get(PATH)
        return _answer(response, response.get_data())

    yield Site(post, get)


@contextmanager
def _starlette(
    handler: Handler, dedup: DedupStore, inline: bool, secrets: Secrets
) -> Iterator[Site]:
    """TestClient runs background tasks before it returns, so the handler has run by then
    whatever ``inline`` says."""
    client = TestClient(Starlette(routes=[webhook_route(PATH, secrets, handler, dedup=dedup)]))

    def post(body: bytes, headers: Mapping[str, str]) -> Answer:
        response = client.post(PATH, content=body, headers=dict(headers))
        return _answer(response, response.content)

    def get() -> Answer:
        response = client.get(PATH)
        return _answer(response, response.content)

    yield Site(post, get)


class UrlConf:
    """A URLconf object (hashable, unlike SimpleNamespace), so each test routes its own view."""

    def __init__(self, urlpatterns: list[Any]) -> None:
        self.urlpatterns = urlpatterns


@contextmanager
def _django(handler: Handler, dedup: DedupStore, inline: bool, secrets: Secrets) -> Iterator[Site]:
    view = django_view(secrets, handler, dedup=dedup, executor=_executor(inline))
    client = DjangoClient(enforce_csrf_checks=True)  # the view must be exempt

    def post(body: bytes, headers: Mapping[str, str]) -> Answer:
        response = client.post(PATH, data=body, content_type=JSON, headers=dict(headers))
        return _answer(response, response.content)

    def get() -> Answer:
        response = client.get(PATH)
        return _answer(response, response.content)

    with override_settings(ROOT_URLCONF=UrlConf([path(PATH.lstrip("/"), view)])):
        yield Site(post, get)


FLASK = Adapter("flask", _flask, b'{"hello": "world"}', hands_over_on_a_thread=True)
STARLETTE = Adapter(
    "starlette",
    _starlette,
    b"[1, 2]",
    hands_over_on_a_thread=False,
    dedup=lambda tmp: SQLiteDedupStore(tmp / "seen.db"),
)
DJANGO = Adapter(
    "django",
    _django,
    b'"just a string"',
    hands_over_on_a_thread=True,
    unsigned={},  # Django's test client sets the content type itself
    allow="POST",
)
ADAPTERS = (FLASK, STARLETTE, DJANGO)
