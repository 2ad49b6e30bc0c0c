"""Fixtures of the integration tests beyond the shared ones in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Api
from tests.support.portal import Browser, signed_in


@pytest.fixture
async def operator(api: Api) -> AsyncIterator[Browser]:
    """The portal, signed in with a new admin key of ``acme``."""
    _, plaintext = await api.tidings.create_api_key("acme", ["admin"])
    async with signed_in(api, plaintext) as browser:
        yield browser
