"""``tidings portal-link``: a consumer link made on the command line opens the real server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.processes import TIDINGS, run_cli, tidings_env


@pytest.mark.asyncio
async def test_a_cli_link_opens_the_tenants_portal(
    server: tuple[str, str], server_env: dict[str, str]
) -> None:
    base, _ = server
    link_args = ["portal-link", "--tenant", "acme", "--hours", "1", "--base-url", base]
    link = run_cli(link_args, server_env)
    url = link.splitlines()[-1]
    assert url.startswith(f"{base}/portal/c/")
    async with httpx.AsyncClient() as browser:
        opened = await browser.get(url)
        assert opened.status_code == 303
        home = await browser.get(f"{base}/portal/")
        assert home.status_code == 200
        assert "consumer · read only" in home.text and ">acme<" in home.text


def test_an_unknown_tenant_gets_no_link(tmp_path: Path) -> None:
    env = tidings_env(tmp_path / "data")
    done = subprocess.run(
        [*TIDINGS, "portal-link", "--tenant", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no tenant named 'nobody'" in done.stderr
    assert "/portal/c/" not in done.stdout
