"""The SSRF address rules, class by class."""

from __future__ import annotations

import ipaddress

import pytest

from tidings.domain.addresses import AddressPolicy, refusal

REFUSED = {
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "169.254.10.10": "link-local",
    "fe80::1": "link-local",
    "100.64.0.1": "CGNAT",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "169.254.169.254": "metadata",
    "fd00:ec2::254": "metadata",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    "64:ff9b::a00:1": "private",
    "2002:7f00:1::": "loopback",
    "192.0.2.10": "address",  # documentation range: refused, whichever label
    "240.0.0.1": "address",  # reserved range
}


@pytest.mark.parametrize(("text", "kind"), sorted(REFUSED.items()))
def test_refused_classes(text: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(text))
    assert reason is not None and kind in reason, reason


@pytest.mark.parametrize("text", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "1.1.1.1"])
def test_public_addresses_pass(text: str) -> None:
    assert refusal(ipaddress.ip_address(text)) is None


def test_operator_lists() -> None:
    policy = AddressPolicy.from_cidrs(False, allow=["10.20.0.0/16"], deny=["8.8.8.0/24"])
    assert policy.check(ipaddress.ip_address("10.20.1.1")) is None
    assert policy.check(ipaddress.ip_address("10.21.1.1")) is not None
    assert policy.check(ipaddress.ip_address("8.8.8.8")) is not None
    assert policy.check(ipaddress.ip_address("1.1.1.1")) is None
    development = AddressPolicy.from_cidrs(True, deny=["127.0.0.2/32"])
    assert development.check(ipaddress.ip_address("127.0.0.1")) is None
    assert development.check(ipaddress.ip_address("127.0.0.2")) is not None
