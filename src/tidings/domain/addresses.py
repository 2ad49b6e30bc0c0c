"""Which network addresses a webhook may be sent to (the SSRF rules), as pure functions.

A sender that strangers point at URLs must never reach the operator's own network:
private ranges, loopback, link-local, carrier-grade NAT, multicast, unspecified and
reserved addresses, and cloud metadata endpoints are refused, including when spelled as
an IPv4-mapped or otherwise embedded IPv6 address. Operators may allow or deny extra
CIDR ranges; an explicit deny wins over an allow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv4-mapped, IPv4-compatible, 6to4 or NAT64 form."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def refusal(address: IPAddress) -> str | None:
    """Why deliveries may not go to ``address``, or None if it is a public address."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return refusal(embedded)
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in CGNAT, "a CGNAT address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


@dataclass(frozen=True)
class AddressPolicy:
    """The operator's rules: ``allow_private`` (development), and extra CIDR lists."""

    allow_private: bool = False
    allow: tuple[IPNetwork, ...] = field(default_factory=tuple)
    deny: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_cidrs(
        cls, allow_private: bool, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> AddressPolicy:
        return cls(
            allow_private,
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in allow if c.strip()),
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in deny if c.strip()),
        )

    def check(self, address: IPAddress) -> str | None:
        """None if deliveries may go to ``address``; else the reason they may not."""
        if any(address in network for network in self.deny):
            return "an address the operator denies"
        if self.allow_private or any(address in network for network in self.allow):
            return None
        return refusal(address)
