"""The webhook guard's address checks as pure functions: the classifier
(infra.outbound_addresses.non_public_reason) on every kind of non-public address and a few public ones,
and `checked_addresses` on a URL whose name is answered by a stand-in resolver (a list handed back, no
lookup). The addresses below are data, never destinations: this module opens no socket, asks no
resolver of the system and builds no request. What touches this machine's own resolver (localhost, odd
spellings of 127.0.0.1) is tests/test_webhook_guard.py, which names loopback addresses only."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest

from infra.outbound_addresses import (
    AddressPolicy,
    AddressRefused,
    HostUnresolvable,
    checked_addresses,
    non_public_reason,
)

PUBLIC_ONLY = AddressPolicy()


class NetworkUsed(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here fails if it connects, sends or asks the system's resolver: the addresses in this
    module are values handed to a classifier, and this makes "never contacted" a checked fact."""
    def refuse(*args, **kwargs):
        raise NetworkUsed(f"a test of pure address checks tried to use the network: {args!r}")

    for name in ("connect", "connect_ex", "sendto"):  # nothing is sent without one of these
        monkeypatch.setattr(socket.socket, name, refuse)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        monkeypatch.setattr(socket, name, refuse)


def test_the_guard_refuses_any_use_of_the_network():
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("localhost", 80)
    with socket.socket() as sock, pytest.raises(NetworkUsed):
        sock.connect(("127.0.0.1", 9))


def stand_in(*answers: str):
    """A resolver that answers every name with `answers`, looking nothing up."""
    async def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("172.31.255.255", "private"), ("192.168.0.10", "private"),
    ("169.254.169.254", "link-local"), ("169.254.170.2", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "shared address space"), ("100.127.255.254", "shared address space"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "private|reserved"), ("255.255.255.255", "private|reserved"),
    ("192.0.2.7", "private"), ("198.51.100.1", "private"), ("203.0.113.9", "private"), ("198.18.0.1", "private"),
    ("fc00::1", "private"), ("fd00:ec2::254", "private"), ("2001:db8::1", "private"),
    # IPv6 forms that carry an IPv4 address inside.
    ("::ffff:127.0.0.1", "loopback .inside"), ("::ffff:169.254.169.254", "link-local.*inside"),
    ("::ffff:10.1.1.1", "private .inside"), ("64:ff9b::a9fe:a9fe", "link-local.*inside"),
    ("2002:7f00:1::", "loopback .inside"), ("2002:a9fe:a9fe::", "link-local.*inside"),
    ("::7f00:1", "reserved"),
])
def test_non_public_addresses_are_named_for_what_they_are(address, kind):
    reason = non_public_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert re.search(kind, reason), (address, reason)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "::ffff:93.184.216.34", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert non_public_reason(ipaddress.ip_address(address)) is None


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_public():
    for answers in (["169.254.169.254"], ["93.184.216.34", "10.0.0.5"], ["::ffff:127.0.0.1"], ["fe80::1%eth0"]):
        with pytest.raises(AddressRefused, match="non-public address"):
            await checked_addresses("https://hooks.example.com/x", PUBLIC_ONLY, stand_in(*answers))
    ok = await checked_addresses("https://hooks.example.com/x", PUBLIC_ONLY, stand_in("93.184.216.34", "1.1.1.1"))
    assert [str(a) for a in ok] == ["93.184.216.34", "1.1.1.1"]


async def test_literal_ip_hosts_are_checked_without_resolving():
    for url in ("http://127.0.0.1/x", "http://[::1]:8080/x", "http://169.254.169.254/latest/meta-data/",
                "http://[::ffff:a9fe:a9fe]/", "http://0.0.0.0:80/"):
        with pytest.raises(AddressRefused):
            await checked_addresses(url, PUBLIC_ONLY, stand_in())  # an empty answer: never asked


async def test_the_allow_list_opens_only_what_it_lists():
    policy = AddressPolicy.allowing(["10.20.0.0/16"])
    assert await checked_addresses("http://hooks.internal/x", policy, stand_in("10.20.3.4"))
    for answers in (["10.21.0.1"], ["127.0.0.1"], ["169.254.169.254"]):
        with pytest.raises(AddressRefused):
            await checked_addresses("http://hooks.internal/x", policy, stand_in(*answers))


async def test_a_name_that_does_not_resolve_is_its_own_kind_of_refusal():
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(HostUnresolvable):
        await checked_addresses("https://nowhere.example/x", PUBLIC_ONLY, fails)
    with pytest.raises(HostUnresolvable):
        await checked_addresses("https://nowhere.example/x", PUBLIC_ONLY, stand_in())


async def test_refusals_never_repeat_the_url():
    url = "https://user-secret-path.example.com/tok3n?sig=abc"
    with pytest.raises(AddressRefused) as refused:
        await checked_addresses(url, PUBLIC_ONLY, stand_in("169.254.169.254"))
    assert "tok3n" not in str(refused.value) and "example.com" not in str(refused.value)
