"""The webhook address guard (infra.outbound_addresses), without a connection to anything: resolution
through a stand-in resolver (or the system's for `localhost`, which this machine answers itself), the
operator's allow-list, and the pinned request. The classifier alone, on every kind of address, is
tests/test_address_classes.py.

The addresses below are values handed to a classifier, never destinations: nothing here opens a
connection, and the autouse `no_connections_leave_this_machine` fixture makes that a guarantee rather
than a promise (any connect to a non-loopback address fails the test before a packet is sent)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from infra.outbound_addresses import (
    AddressPolicy,
    AddressRefused,
    HostUnresolvable,
    checked_addresses,
    pin,
)
from infra.settings import Settings

PUBLIC_ONLY = AddressPolicy()
LOOPBACK = AddressPolicy.allowing(["127.0.0.0/8", "::1/128"])


@pytest.fixture(autouse=True)
def no_connections_leave_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket connect in these tests must go to a loopback address (asyncio connects through the
    same methods); anything else fails here, before a packet leaves."""
    def guarded(original: Any) -> Any:
        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host = address[0].split("%")[0]
                assert ipaddress.ip_address(host).is_loopback, f"a test tried to connect to {host}"
            return original(sock, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))


def resolver(*answers: str):
    async def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_public():
    for answers in (["169.254.169.254"], ["93.184.216.34", "10.0.0.5"], ["::ffff:127.0.0.1"], ["fe80::1%eth0"]):
        with pytest.raises(AddressRefused, match="non-public address"):
            await checked_addresses("https://hooks.example.com/x", PUBLIC_ONLY, resolver(*answers))
    ok = await checked_addresses("https://hooks.example.com/x", PUBLIC_ONLY, resolver("93.184.216.34", "1.1.1.1"))
    assert [str(a) for a in ok] == ["93.184.216.34", "1.1.1.1"]


async def test_literal_and_odd_ip_spellings_are_refused():
    for url in ("http://127.0.0.1/x", "http://[::1]:8080/x", "http://169.254.169.254/latest/meta-data/",
                "http://[::ffff:a9fe:a9fe]/", "http://0.0.0.0:80/"):
        with pytest.raises(AddressRefused):
            await checked_addresses(url, PUBLIC_ONLY, resolver("93.184.216.34"))
    # Decimal and short forms are names to the URL parser; the system resolver turns them into 127.0.0.1.
    for url in ("http://2130706433/", "http://127.1/", "http://0x7f000001/"):
        with pytest.raises(AddressRefused, match="loopback"):
            await checked_addresses(url, PUBLIC_ONLY)


async def test_localhost_resolves_to_loopback_and_is_refused_unless_allowed():
    with pytest.raises(AddressRefused, match="loopback"):
        await checked_addresses("http://localhost:9/hook", PUBLIC_ONLY)
    allowed = await checked_addresses("http://localhost:9/hook", LOOPBACK)
    assert allowed and all(a.is_loopback for a in allowed)


async def test_the_allow_list_opens_only_what_it_lists():
    policy = AddressPolicy.allowing(["10.20.0.0/16"])
    assert await checked_addresses("http://hooks.internal/x", policy, resolver("10.20.3.4"))
    for answers in (["10.21.0.1"], ["127.0.0.1"], ["169.254.169.254"]):
        with pytest.raises(AddressRefused):
            await checked_addresses("http://hooks.internal/x", policy, resolver(*answers))
    assert LOOPBACK.refusal(ipaddress.ip_address("::1")) is None
    assert AddressPolicy.allowing(["127.0.0.0/8"]).refusal(ipaddress.ip_address("::1")) == "loopback"


async def test_a_name_that_does_not_resolve_is_its_own_kind_of_refusal():
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(HostUnresolvable):
        await checked_addresses("https://nowhere.example/x", PUBLIC_ONLY, fails)
    with pytest.raises(HostUnresolvable):
        await checked_addresses("https://nowhere.example/x", PUBLIC_ONLY, resolver())


async def test_refusals_never_repeat_the_url():
    url = "https://user-secret-path.example.com/tok3n?sig=abc"
    with pytest.raises(AddressRefused) as refused:
        await checked_addresses(url, PUBLIC_ONLY, resolver("169.254.169.254"))
    assert "tok3n" not in str(refused.value) and "example.com" not in str(refused.value)


def test_pinned_requests_go_to_the_checked_address_under_the_original_name():
    pinned = pin("https://hooks.example.com:8443/a/b?c=1", ipaddress.ip_address("93.184.216.34"))
    assert pinned.url == "https://93.184.216.34:8443/a/b?c=1"
    assert pinned.headers == {"Host": "hooks.example.com:8443"}
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}, "TLS verifies the original name"
    v6 = pin("http://hooks.example.com/x", ipaddress.ip_address("2606:4700::1"))
    assert v6.url == "http://[2606:4700::1]/x" and v6.headers == {"Host": "hooks.example.com"} and not v6.extensions


def test_settings_default_to_public_addresses_only():
    assert Settings(_env_file=None).webhook_allowed_networks == []
    with pytest.raises(ValueError):
        Settings(_env_file=None, webhook_allowed_networks=["not-a-network"])
