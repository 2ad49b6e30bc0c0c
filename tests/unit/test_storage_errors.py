"""Telling a database outage from a bug, whatever the driver says."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc as sa

from tidings.storage.errors import StorageUnavailable, is_outage, translated


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"),
        asyncpg.exceptions.TargetServerAttributeNotMatched("None of the hosts match"),
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("attempt to write a readonly database"),
        sa.OperationalError("SELECT 1", {}, ConnectionResetError()),
    ],
)
def test_outages_are_recognised(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        sqlite3.OperationalError('near "SELEC": syntax error'),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        sa.IntegrityError("INSERT", {}, Exception("duplicate")),
    ],
)
def test_bugs_and_conflicts_are_not_outages(error: Exception) -> None:
    assert not is_outage(error)


async def test_translated_raises_storage_unavailable_for_outages_only() -> None:
    @translated
    async def down() -> None:
        raise ConnectionRefusedError(111, "refused")

    @translated
    async def buggy() -> None:
        raise KeyError("x")

    with pytest.raises(StorageUnavailable):
        await down()
    with pytest.raises(KeyError):
        await buggy()


def test_a_wrapped_outage_is_found_through_the_cause() -> None:
    try:
        try:
            raise OSError("network unreachable")
        except OSError as inner:
            raise RuntimeError("while claiming") from inner
    except RuntimeError as outer:
        assert is_outage(outer)
