"""Scripted DNS for tests: this sandbox has no resolver for public names."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


class ScriptedResolver(AbstractResolver):
    """Answers from ``answers[host]``, one list per lookup (the last one repeats);
    hosts it does not know go to the real resolver (numeric forms, localhost)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []
        self._real = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        script = self.answers.get(host)
        if script is None:
            return await self._real.resolve(host, port, family)
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        await self._real.close()


def factory(resolver: ScriptedResolver) -> Callable[[], AbstractResolver]:
    return lambda: resolver
