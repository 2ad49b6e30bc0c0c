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


# --- the policy, mode by mode -------------------------------------------------------------

PRODUCTION = AddressPolicy.from_cidrs(False)
DEVELOPMENT = AddressPolicy.from_cidrs(True)
EVERYTHING = ["0.0.0.0/0", "::/0"]
ALLOW_ALL_PRODUCTION = AddressPolicy.from_cidrs(False, allow=EVERYTHING)
ALLOW_ALL_DEVELOPMENT = AddressPolicy.from_cidrs(True, allow=EVERYTHING)
MODES = {
    "production": PRODUCTION,
    "development": DEVELOPMENT,
    "production, allow 0/0": ALLOW_ALL_PRODUCTION,
    "development, allow 0/0": ALLOW_ALL_DEVELOPMENT,
}

# address class -> (examples, allowed in production, in development, with an allowlist naming it)
CLASSES: dict[str, tuple[list[str], bool, bool, bool]] = {
    "public": (["93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8"], True, True, True),
    "loopback": (["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"], False, True, True),
    "rfc1918": (
        ["10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "::ffff:192.168.1.1"],
        False,
        True,
        True,
    ),
    "unique-local": (["fc00::1", "fd12:3456::1"], False, True, True),
    "cgnat": (["100.64.0.1", "100.127.255.254"], False, False, True),
    "link-local": (["169.254.10.10", "169.254.170.2", "fe80::1"], False, False, True),
    "unspecified": (["0.0.0.0", "::"], False, False, True),
    "multicast": (["224.0.0.1", "ff02::1"], False, False, True),
    "reserved": (["240.0.0.1", "192.0.2.10"], False, False, True),
    "loopback via 6to4 or NAT64": (["2002:7f00:1::", "64:ff9b::7f00:1"], False, False, True),
    "metadata": (
        [
            "169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
            "::ffff:100.100.100.200",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "::a9fe:a9fe",
        ],
        False,
        False,
        False,
    ),
}


def _expected(mode: str, allowed: tuple[bool, bool, bool]) -> bool:
    production, development, allowlisted = allowed
    if "allow" in mode:
        return allowlisted
    return development if mode == "development" else production


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_policy_by_mode_and_address_class(mode: str, kind: str) -> None:
    examples, *allowed = CLASSES[kind]
    expected = _expected(mode, (allowed[0], allowed[1], allowed[2]))
    for text in examples:
        reason = MODES[mode].check(ipaddress.ip_address(text))
        assert (reason is None) is expected, (mode, text, reason)
        if kind == "metadata":
            assert reason == "a cloud metadata address"


@pytest.mark.parametrize("text", sorted(CLASSES["metadata"][0]))
def test_metadata_is_refused_even_when_allowlisted_exactly(text: str) -> None:
    address = ipaddress.ip_address(text)
    for development in (False, True):
        policy = AddressPolicy.from_cidrs(development, allow=[f"{text}/{address.max_prefixlen}"])
        assert policy.check(address) == "a cloud metadata address"


def test_deny_wins_in_every_mode_and_over_embedded_spellings() -> None:
    for development in (False, True):
        policy = AddressPolicy.from_cidrs(
            development, allow=["10.0.0.0/8", "8.8.8.0/24"], deny=["10.9.0.0/16", "8.8.8.8/32"]
        )
        for text in ("10.9.1.1", "::ffff:10.9.1.1", "8.8.8.8", "::ffff:8.8.8.8", "2002:808:808::"):
            assert policy.check(ipaddress.ip_address(text)) == "an address the operator denies"
        assert policy.check(ipaddress.ip_address("10.8.1.1")) is None


def test_settings_build_the_policy_of_their_mode() -> None:
    from tidings.config import Settings

    loopback = ipaddress.ip_address("127.0.0.1")
    metadata = ipaddress.ip_address("169.254.169.254")
    development = Settings(env="development", allow_cidrs="169.254.0.0/16").address_policy
    production = Settings(env="production", allow_cidrs="169.254.0.0/16").address_policy
    assert development.check(loopback) is None
    assert production.check(loopback) is not None
    assert development.check(ipaddress.ip_address("169.254.1.1")) is None
    assert development.check(metadata) == production.check(metadata) == "a cloud metadata address"
