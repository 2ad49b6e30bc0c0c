"""The SSRF guard at connect time: resolve once, check every address, connect to those.

aiohttp connects to exactly the addresses its resolver returns, so filtering them here
means a name that resolves to a public address when the subscription is saved and to
127.0.0.1 at send time (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from tidings.domain.addresses import AddressPolicy


class BlockedAddress(OSError):
    """The destination resolves to an address deliveries may not go to."""


class GuardedResolver(AbstractResolver):
    def __init__(
        self, policy: AddressPolicy, inner: Callable[[], AbstractResolver] = ThreadedResolver
    ) -> None:
        self._policy = policy
        self._inner = inner()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = self._policy.check(ipaddress.ip_address(result["host"]))
            if reason is not None:
                raise BlockedAddress(f"{host} resolves to {reason} ({result['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_host(
    host: str,
    port: int,
    policy: AddressPolicy,
    inner: Callable[[], AbstractResolver] = ThreadedResolver,
) -> None:
    """Resolve ``host`` now and raise BlockedAddress if any of its addresses is refused.

    Used when a subscription is saved, so the user hears at once why a URL cannot work.
    """
    resolver = GuardedResolver(policy, inner)
    try:
        await resolver.resolve(host, port, socket.AF_UNSPEC)
    except BlockedAddress:
        raise
    except OSError as exc:
        raise BlockedAddress(f"{host} does not resolve: {exc.strerror or exc}") from exc
    finally:
        await resolver.close()
