"""The client's models (tidings.client.models) and the API's response schemas
(tidings.api.schemas) are written separately; this ties them field by field, so a field
added to, renamed in or made optional in one fails here until the other follows."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest
from pydantic import BaseModel

from tidings.api import schemas
from tidings.client import models
from tidings.client.models import camel

PAIRS: list[tuple[type[models.Model], type[BaseModel]]] = [
    (models.Subscription, schemas.Verified),
    (models.CreatedSubscription, schemas.CreatedSubscription),
    (models.TestResult, schemas.TestDeliveryResult),
    (models.Attempt, schemas.Attempt),
    (models.EventType, schemas.EventTypeOut),
    (models.Redelivery, schemas.RedeliverResult),
]


def _client_fields(model: type[models.Model]) -> dict[str, bool]:
    """camelCase name -> whether the client requires it."""
    return {
        camel(f.name): f.default is MISSING and f.default_factory is MISSING for f in fields(model)
    }


def _api_fields(schema: type[BaseModel]) -> dict[str, bool]:
    """Serialized name -> whether every response carries it (a required field, or an
    optional one the API always writes, as null when unset)."""
    document = schema.model_json_schema(by_alias=True, mode="serialization")
    required = set(document.get("required", ()))
    return {name: name in required for name in document["properties"]}


@pytest.mark.parametrize(("client", "api"), PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_client_model_has_exactly_the_api_fields(
    client: type[models.Model], api: type[BaseModel]
) -> None:
    assert set(_client_fields(client)) == set(_api_fields(api))


@pytest.mark.parametrize(("client", "api"), PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_client_requires_only_what_every_response_carries(
    client: type[models.Model], api: type[BaseModel]
) -> None:
    carried = _api_fields(api)
    required = {name for name, needed in _client_fields(client).items() if needed}
    assert {name for name in required if not carried[name]} == set()
