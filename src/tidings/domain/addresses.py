"""Which network addresses a webhook may be sent to (the SSRF rules), as pure functions.

A sender that strangers point at URLs must never reach the operator's own network:
private ranges, loopback, link-local, carrier-grade NAT, multicast, unspecified and
reserved addresses, and cloud metadata endpoints are refused, including when spelled as
an IPv4-mapped or otherwise embedded IPv6 address. Operators may allow or deny extra
CIDR ranges; an explicit deny wins over an allow. Cloud metadata endpoints are refused
in every mode, whatever the lists say: nothing a webhook needs lives there, and they hand
out the host's cloud credentials.
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
NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEVELOPMENT_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
"""What development mode adds to production's rules: loopback, and the private ranges a
developer's own machine and LAN use (RFC 1918, and IPv6 unique-local fc00::/7).

Not carrier-grade NAT (100.64.0.0/10): it is the ISP's or cloud provider's network, not
the developer's, and Alibaba Cloud's metadata service lives in it. Not link-local
(169.254.0.0/16, fe80::/10): that is where clouds put their metadata and credential
endpoints. Not 0.0.0.0, multicast or reserved ranges. A developer who needs one of those
(e.g. a Tailscale peer in 100.64.0.0/10) names it in ``TIDINGS_ALLOW_CIDRS``.
"""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv4-mapped, IPv4-compatible, 6to4 or NAT64 form."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def _spellings(address: IPAddress) -> tuple[IPAddress, ...]:
    """``address`` and any IPv4 address embedded in it: refusals look at both."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return (address, embedded)
    return (address,)


def _same_host(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped ``::ffff:a.b.c.d`` reaches on a dual-stack socket;
    allowances look at this one only (6to4 and NAT64 forms go through a gateway)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_metadata(address: IPAddress) -> bool:
    return any(spelling in METADATA_ADDRESSES for spelling in _spellings(address))


def refusal(address: IPAddress) -> str | None:
    """Why deliveries may not go to ``address`` in production, or None if it is public."""
    if is_metadata(address):
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


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in networks)


@dataclass(frozen=True)
class AddressPolicy:
    """The rules for one deployment, in this order: cloud metadata addresses are refused;
    the operator's ``deny`` ranges are refused; the operator's ``allow`` ranges are
    allowed; in ``development``, loopback and private ranges (``DEVELOPMENT_NETWORKS``)
    are allowed; everything else follows production's ``refusal``.
    """

    development: bool = False
    allow: tuple[IPNetwork, ...] = field(default_factory=tuple)
    deny: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_cidrs(
        cls, development: bool, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> AddressPolicy:
        return cls(
            development,
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in allow if c.strip()),
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in deny if c.strip()),
        )

    def check(self, address: IPAddress) -> str | None:
        """None if deliveries may go to ``address``; else the reason they may not."""
        if is_metadata(address):
            return "a cloud metadata address"
        if any(_within(spelling, self.deny) for spelling in _spellings(address)):
            return "an address the operator denies"
        host = _same_host(address)
        if _within(address, self.allow) or _within(host, self.allow):
            return None
        if self.development and _within(host, DEVELOPMENT_NETWORKS):
            return None
        return refusal(address)
