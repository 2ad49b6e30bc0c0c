"""The SSRF guard at connect time: resolve once, check every address, connect to those.

aiohttp connects to exactly the addresses its resolver returns, so filtering them here
means a name that resolves to a public address when the subscription is saved and to
127.0.0.1 at send time (DNS rebinding) is still refused. aiohttp asks no resolver about
an IP literal, so the sender checks those itself (``refuse_literal``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from tidings.domain.addresses import AddressPolicy, IPAddress


class BlockedAddress(OSError):
    """The destination resolves to an address deliveries may not go to."""


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells if it is numeric, in any form the system's resolver
    reads as one (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``::1``); None for a name.

    Never touches the network: ``AI_NUMERICHOST`` refuses names instead of looking them up.
    """
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0]) if infos else None


def refuse_literal(host: str, policy: AddressPolicy) -> None:
    """Raise BlockedAddress if ``host`` is an IP literal the policy refuses."""
    address = literal_address(host)
    reason = None if address is None else policy.check(address)
    if reason is not None:
        raise BlockedAddress(f"{host} is {reason}")


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

    def refusal(self, address: str) -> str | None:
        """Why the policy refuses this IP address, or None if it may be connected to."""
        return self._policy.check(ipaddress.ip_address(address))

    def refuse_literal(self, host: str) -> None:
        """Raise BlockedAddress if ``host`` is an IP literal this guard refuses."""
        refuse_literal(host, self._policy)

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
    except ValueError as exc:  # e.g. UnicodeError: a label IDNA refuses (empty, too long)
        raise BlockedAddress(f"{host} is not a valid host name: {exc}") from exc
    finally:
        await resolver.close()
