"""``tidings keys list`` and ``tidings keys revoke`` against the real server's database:
the list shows no secret, and a revocation from the command line (another process) ends
the key's portal session at once and its API access within the key cache's window."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tests.support.processes import TIDINGS, create_key, run_cli, tidings_env
from tidings.service import KEY_CACHE_SECONDS, hash_api_key


def key_rows(listing: str) -> dict[str, list[str]]:
    """``keys list`` output by key prefix: [id, prefix, scopes, created, revoked]."""
    header, *rows = listing.splitlines()
    assert header.split() == ["ID", "PREFIX", "SCOPES", "CREATED", "REVOKED"]
    return {row.split()[1]: row.split() for row in rows}


@pytest.mark.asyncio
async def test_keys_are_listed_without_secrets_and_revoked_for_good(
    server: tuple[str, str], server_env: dict[str, str]
) -> None:
    base, admin = server
    reader = create_key(server_env, scope="events:read")
    create_key(server_env, tenant="globex")

    listing = run_cli(["keys", "list", "--tenant", "acme"], server_env)
    for plaintext in (admin, reader):
        assert plaintext[12:] not in listing and hash_api_key(plaintext) not in listing
    rows = key_rows(listing)
    assert set(rows) == {admin[:12], reader[:12]}
    assert rows[reader[:12]][2] == "events:read" and rows[reader[:12]][4] == "-"

    async with httpx.AsyncClient(base_url=base) as browser:
        signed_in = await browser.post("/portal/login", data={"api_key": admin})
        assert signed_in.status_code == 303
        assert (await browser.get("/portal/")).status_code == 200
        reader_headers = {"X-Api-Key": reader}
        assert (await browser.get("/api/v1/events", headers=reader_headers)).status_code == 200

        done = run_cli(["keys", "revoke", rows[reader[:12]][0]], server_env)
        assert f"revoked key {rows[reader[:12]][0]}" in done

        async def reader_refused() -> bool:
            response = await browser.get("/api/v1/events", headers=reader_headers)
            return response.status_code == 401

        await eventually(reader_refused, timeout=KEY_CACHE_SECONDS + 5)

        # The CLI may revoke a tenant's last admin key (it can always create another);
        # the portal session opened with it ends at once, in the server's process too.
        done = run_cli(["keys", "revoke", rows[admin[:12]][0]], server_env)
        assert "ended 1 portal session(s)" in done
        assert (await browser.get("/portal/")).status_code == 303

    rows = key_rows(run_cli(["keys", "list", "--tenant", "acme"], server_env))
    assert rows[reader[:12]][4] != "-" and rows[admin[:12]][4] != "-"
    again = run_cli(["keys", "revoke", rows[reader[:12]][0]], server_env)
    assert "already revoked" in again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "list", "--tenant", "nobody"], "no tenant named 'nobody'"),
        (["keys", "revoke", "key_nope"], "no key with id 'key_nope'"),
    ],
)
def test_unknown_names_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [*TIDINGS, *args],
        env=tidings_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
